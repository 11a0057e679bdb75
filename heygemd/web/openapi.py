"""The API as a workflow tool imports it (``GET /openapi.json``: Dify custom tools, n8n, agents choosing a tool):
every operation's stable ``operationId``, summary and description, written for whoever picks a tool by them, with
examples; the bearer token declared and applied; the server's own address; enums from the code's own lists (the
engines of :mod:`heygemd.engine_names`, the loop modes of the settings: both through ``JobOptions``).

``OPERATIONS`` holds what the routes of :mod:`heygemd.web.api` pass to their decorators; :func:`document` finishes
the schema FastAPI makes from them.
"""

from __future__ import annotations

from typing import Any

from heygemd.daemon.library import PresenterOptions
from heygemd.daemon.status import SCHEMA_VERSION
from heygemd.idempotency import MAX_KEY_LENGTH
from heygemd.web.problems import Problem
from heygemd.web.submission import FORM, JSON
from heygemd.web.upload import PRESENTER_FILE_FIELD, PRESENTERS_FIELD, options_schema, value_schema

BEARER = "bearerAuth"

SUBMITTED = {"job_id": "lesson-01", "status_url": "/api/jobs/lesson-01"}
JOB_DONE: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "job_id": "lesson-01",
    "job_name": "lesson-01",
    "state": "done",
    "created": "2026-01-05T09:00:00Z",
    "started": "2026-01-05T09:00:02Z",
    "finished": "2026-01-05T09:01:10Z",
    "engine": "mouthwarp",
    "audio": {"file": "speech.wav", "duration_s": 42.5},
    "videos": [
        {
            "input": "anna.mp4",
            "state": "done",
            "progress": 1.0,
            "output": "anna.mp4",
            "poster": "anna.jpg",
        }
    ],
    "progress": 1.0,
    "error": None,
    "callbacks": [
        {
            "delivery": "3f2c9d0e5b7a4c1d8e6f0a2b4c6d8e01",
            "event": "job.finished",
            "host": "n8n.example.com",
            "state": "delivered",
            "attempts": 1,
        }
    ],
}


def _inputs_schema(*, urls_only: bool) -> dict[str, Any]:
    """The fields of a submission: the inputs (as URLs; with ``urls_only`` False, also as files), the name and the
    options."""
    urls: dict[str, Any] = {
        "audio_url": {
            "type": "string",
            "format": "uri",
            "description": "URL of the speech (wav, mp3, m4a, ..., or a video whose sound is used), downloaded by "
            "heygemd from a host the server's [web] fetch_hosts allows.",
        },
        "video_urls": {
            "type": "array",
            "items": {"type": "string", "format": "uri"},
            "description": "URLs of the presenter videos or still photos, one output video each (at least one "
            "presenter: here, in 'presenters' or both).",
        },
        PRESENTERS_FIELD: {
            "type": "array",
            "items": {"type": "string"},
            "description": "Presenters of the library by name (listPresenters), one output video each, besides or "
            "instead of presenter videos; ['all'] for every one. Nothing is uploaded or downloaded for them, and a "
            "prepared one starts rendering at once.",
        },
    }
    files: dict[str, Any] = {
        "audio": {"type": "string", "format": "binary", "description": "The speech file (instead of audio_url)."},
        "videos": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Presenter videos or still photos; repeat the field for each file (or give video_urls).",
        },
    }
    properties = {
        **({} if urls_only else files),
        **urls,
        "name": {
            "type": "string",
            "description": "Job name (default: the audio's name); the job id is this name, "
            "with -2, -3, ... when it is taken.",
        },
        **options_schema(),
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if urls_only:
        schema["required"] = ["audio_url"]
    return schema


URL_JOB_EXAMPLE = {
    "name": "lesson-01",
    "audio_url": "https://files.example.com/tts/lesson-01.mp3",
    "video_urls": ["https://files.example.com/presenters/anna.mp4"],
    "engine": "mouthwarp",
    "callback_url": "https://n8n.example.com/webhook-waiting/1234",
}

PRESENTER_READY: dict[str, Any] = {
    "name": "anna",
    "file": "anna.mp4",
    "state": "ready",
    "stage": None,
    "progress": 1.0,
    "display_name": "Anna S.",
    "duration_s": 12.0,
    "width": 1280,
    "height": 720,
    "fps": 25.0,
    "still": False,
    "face_ratio": 0.98,
    "warnings": [],
    "error": None,
    "engines": ["mouthwarp", "musetalk"],
    "poster_url": "/api/presenters/anna/poster?v=1767603600000000000",
    "preview_url": "/api/presenters/anna/preview",
}


def _presenter_body() -> dict[str, Any]:
    """The multipart body of ``POST /api/presenters``: the file, its name, the options of its toml."""
    options = PresenterOptions.model_json_schema()["properties"]
    properties: dict[str, Any] = {
        PRESENTER_FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "The presenter: a video (mp4, mov, ...) or a photo (jpg, png, ...) of the face.",
        },
        "name": {
            "type": "string",
            "description": "What jobs call it (default: the file's name without its suffix), made safe as job "
            "names are.",
        },
        **{name: value_schema(schema) for name, schema in options.items()},
    }
    schema = {"type": "object", "required": [PRESENTER_FILE_FIELD], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


PRESENTER_BODY = _presenter_body()

SUBMIT_BODY: dict[str, Any] = {
    # Dify sends the first content type and offers the fields of the last one: both are the job by URLs.
    "required": True,
    "content": {
        JSON: {"schema": _inputs_schema(urls_only=True), "example": URL_JOB_EXAMPLE},
        "multipart/form-data": {"schema": _inputs_schema(urls_only=False)},
        FORM: {"schema": _inputs_schema(urls_only=True)},
    },
}


def _answer(description: str, example: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


def _problem(description: str, example: dict[str, str]) -> dict[str, Any]:
    return {"model": Problem, **_answer(description, example)}


def _forbidden(role: str) -> dict[int, dict[str, Any]]:
    """The answer of an operation that needs ``role`` to a key whose account has a lower one."""
    return {
        403: _problem(
            f"FORBIDDEN_ROLE: the key's account has a role below {role} (viewer < editor < admin). CROSS_SITE: a "
            "browser request from another site.",
            {
                "code": "FORBIDDEN_ROLE",
                "message": f"vera has the viewer role; this needs the {role} role (or above)",
                "hint": "Ask an admin for an account with that role (heygemd users role NAME ROLE), or use one "
                "that has it.",
            },
        )
    }


INTAKE = {
    "taking_jobs": False,
    "paused": False,
    "paused_by": None,
    "hours": ["20:00-07:00"],
    "waits_for": "waits for 20:00",
}


OPERATIONS: dict[str, dict[str, Any]] = {
    "getHealth": {
        "summary": "Check the server: up, its engine, whether it renders, whether anything renders at all, whether it "
        "takes jobs",
        "description": "Answers at once. Use it to check the connection and the token before submitting, or to see "
        "whether the worker is busy (busy, current: the job rendering) and how many jobs wait (queued). 'workers' "
        "counts the live renderers (heygemd run, or a farm's heygemd worker): 0 means a submitted job waits until "
        "one starts. 'engines' lists the engines a job may name now (a renderer has their files); 'ignored' the "
        "files lying directly in the inbox, which no job takes. 'taking_jobs' says whether a waiting job may start "
        "now (else waits_for says why: paused by an admin, or outside the rendering hours).",
        "responses": {
            200: _answer(
                "The server is up.",
                {
                    "status": "ok",
                    "version": "0.1.0",
                    "engine": "mouthwarp",
                    "busy": True,
                    "current": "lesson-01",
                    "queued": 2,
                    "workers": 1,
                    "engines": ["mouthwarp"],
                    "ignored": [],
                    **INTAKE,
                },
            )
        },
    },
    "pauseIntake": {
        "summary": "Pause the intake: no waiting job starts until resumed (admin)",
        "description": "Stops the server from starting jobs: a job rendering now finishes, waiting jobs wait "
        "(their status says 'paused by ...'), new jobs are still accepted. The pause holds across restarts until "
        "resumeIntake. Needs an admin key.",
        "responses": {
            200: _answer(
                "Paused.",
                {**INTAKE, "paused": True, "paused_by": "web anna from 10.0.0.7", "waits_for": "paused by anna"},
            ),
            **_forbidden("admin"),
        },
    },
    "resumeIntake": {
        "summary": "Resume the intake: waiting jobs start again (admin)",
        "description": "Ends a pause (pauseIntake): waiting jobs start again, highest priority first, within the "
        "rendering hours. Needs an admin key.",
        "responses": {
            200: _answer("Resumed.", {**INTAKE, "taking_jobs": True, "hours": [], "waits_for": None}),
            **_forbidden("admin"),
        },
    },
    "listJobs": {
        "summary": "List jobs, newest first, one page at a time",
        "description": "Every job the server knows (waiting, rendering and finished), newest first, each as its "
        "status document (see getJob). Use it to find a job whose id you do not have; page through with 'page'.",
    },
    "submitJob": {
        "summary": "Submit a lip-sync job: one speech audio and one or more presenter videos",
        "description": "Creates a job that renders every presenter video (or photo) speaking the one audio, one "
        "output video each. Give the files as URLs (application/json: audio_url and video_urls; heygemd downloads "
        "them) or upload them (multipart/form-data: audio and videos); name presenters of the library "
        "(listPresenters) in 'presenters' instead of, or besides, sending their videos. It answers at once with the "
        "job_id; the render takes minutes. Then either poll getJob every few seconds until 'state' is done, "
        "partial, failed or cancelled, or give callback_url: heygemd POSTs the final status document there, signed, "
        "when the job ends. Download the results with getJobOutputsZip. Send an Idempotency-Key header to make a "
        "retry safe: the same key and request answer the first job again (200) instead of making a second one. "
        "'priority' (high, normal, low or 0-9) puts it before or after other waiting jobs. Needs an editor key.",
        "responses": {
            **_forbidden("editor"),
            201: _answer("The job is queued.", SUBMITTED),
            200: _answer("The same Idempotency-Key and request as before: the first answer again.", SUBMITTED),
            400: _problem(
                "Refused: BAD_UPLOAD, CALLBACK_NOT_ALLOWED, FETCH_NOT_ALLOWED (a URL's host is not allowed), "
                "ENGINE_NOT_INSTALLED (no live renderer has the files of the engine named: see getHealth's "
                "'engines'), BAD_IDEMPOTENCY_KEY, NO_SUCH_PRESENTER (a name in 'presenters' is not in the library). "
                "Nothing was queued.",
                {
                    "code": "CALLBACK_NOT_ALLOWED",
                    "message": "hooks.example.org is not among the hosts notify.callback_hosts allows",
                    "hint": "Use a callback URL on a host the server's [notify] callback_hosts lists, ...",
                },
            ),
            409: _problem(
                "IDEMPOTENCY_MISMATCH (the key was used for another request) or IDEMPOTENCY_BUSY (its first "
                "request is still being handled: send it again in a minute).",
                {
                    "code": "IDEMPOTENCY_MISMATCH",
                    "message": "this Idempotency-Key was used for a different request less than 24 hours ago",
                    "hint": "An Idempotency-Key stands for one request: ...",
                },
            ),
            502: _problem(
                "FETCH_FAILED: an input URL could not be downloaded (no answer, an error answer). Nothing was queued.",
                {
                    "code": "FETCH_FAILED",
                    "message": "video_urls[0] (from files.example.com): answered 404 Not Found",
                    "hint": "Check that the URL works (it may have expired) and submit the job again; ...",
                },
            ),
        },
    },
    "getJob": {
        "summary": "Get a job's status: state, progress, each video, errors",
        "description": "The job's status document. 'state' is queued, processing, done, partial (some videos "
        "failed), failed or cancelled; 'progress' goes from 0 to 1; each entry of 'videos' has its own state, "
        "'output' file name once done, and 'error' (code, message, hint) when it failed. Poll it until 'state' is "
        "done, partial, failed or cancelled; then download with getJobOutputsZip or getJobFile.",
        "responses": {200: _answer("The job's status document.", JOB_DONE)},
    },
    "getJobFile": {
        "summary": "Download one file of a job: an output video, a poster, job.log, status.json",
        "description": "One file of the job's results, by the name its status lists (videos[].output, "
        "videos[].poster, job.log, status.json). download=true asks for an attachment.",
    },
    "headJobFile": {
        "summary": "The headers of getJobFile (size, type, name), no body",
        "description": "Check that a result file is there and how large it is without downloading it.",
    },
    "getJobOutputsZip": {
        "summary": "Download every result of a job as one ZIP",
        "description": "The output videos, posters, status.json and job.log of a job as one ZIP file, streamed. "
        "Use it once getJob says done or partial.",
    },
    "headJobOutputsZip": {
        "summary": "The headers of getJobOutputsZip, no body",
        "description": "Check that the job's results can be downloaded without downloading them.",
    },
    "cancelJob": {
        "summary": "Cancel a job",
        "description": "A job still waiting never starts ('cancelled' at once); a rendering one stops at its next "
        "batch of frames ('cancelling'; getJob then says cancelled). Videos finished before stay. A finished job "
        "answers 409 ALREADY_DONE. Needs an editor key.",
        "responses": {
            **_forbidden("editor"),
            202: _answer(
                "Cancelled, or being cancelled.",
                {"job_id": "lesson-01", "state": "cancelling", "status_url": "/api/jobs/lesson-01"},
            ),
        },
    },
    "retryJob": {
        "summary": "Render a finished job again, as a new job: its failed, cancelled or not started videos",
        "description": "Submits a new job (<job>-retry) with the original audio and the presenters whose videos "
        "failed, were cancelled or did not start; the original job stays as it is. A job that failed as a whole "
        "(its own 'error', e.g. BAD_JOB for a bad job.toml) is submitted with every file of its archived inputs, "
        "the folder its error's hint names: fix the cause there first. ?engine= renders the new job with another "
        "engine. Poll the new job_id with getJob. Needs an editor key.",
        "responses": {
            **_forbidden("editor"),
            201: _answer(
                "The new job is queued.", {"job_id": "lesson-01-retry", "status_url": "/api/jobs/lesson-01-retry"}
            ),
            400: _problem(
                "ENGINE_NOT_INSTALLED: no live renderer has the files of the engine the job names. Nothing was queued.",
                {
                    "code": "ENGINE_NOT_INSTALLED",
                    "message": "engine 'musetalk' is not installed: models/musetalk/ lacks musetalkV15/unet.pth",
                    "hint": "Download MuseTalk's files into models/musetalk/ ... `heygemd check` lists what is there.",
                },
            ),
        },
    },
    "setJobPriority": {
        "summary": "Change the priority of a job that has not started",
        "description": 'JSON body {"priority": "high"} (high, normal, low or a number 0-9, higher first). Waiting '
        "jobs start highest priority first, then oldest first; a job rendering is never interrupted, so a job that "
        "has started answers 409 JOB_BUSY (a finished one 409 ALREADY_DONE). Answers the job's status document "
        "with its new priority. Needs an editor key.",
        "responses": {**_forbidden("editor")},
    },
    "deleteJob": {
        "summary": "Delete a finished job and its files",
        "description": "Removes the job's results and its archived inputs. A job still waiting or rendering "
        "answers 409 JOB_BUSY: cancel it first. Needs an admin key.",
        "responses": {200: _answer("Deleted.", {"deleted": "lesson-01"}), **_forbidden("admin")},
    },
    "listPresenters": {
        "summary": "List the presenter library: each presenter's name, state, poster and engines",
        "description": "Every presenter of the library (registered once, then named by jobs in 'presenters' "
        "instead of uploading its video each time), in name order: 'state' is preparing (with 'stage' and "
        "'progress'), ready or failed (with 'error': code, message, hint); 'engines' are those it is prepared for; "
        "'poster_url' is a picture of it once prepared.",
        "responses": {200: _answer("The library.", {"presenters": [PRESENTER_READY]})},
    },
    "addPresenter": {
        "summary": "Add a presenter to the library: one video or photo of the face",
        "description": "Uploads one presenter (multipart/form-data: 'video', optional 'name' and the options of "
        "its toml) into the library; the server prepares it (face track, engine preparations, poster) between "
        "jobs. Poll getPresenter until 'state' is ready or failed; name it in submitJob's 'presenters' from then on. "
        "A name already taken answers 409 PRESENTER_EXISTS. Needs an editor key.",
        "responses": {
            **_forbidden("editor"),
            201: _answer(
                "Added; being prepared.",
                {**PRESENTER_READY, "state": "preparing", "stage": "waiting", "progress": 0.0, "engines": []},
            ),
            409: _problem(
                "PRESENTER_EXISTS: the library has a presenter of that name.",
                {
                    "code": "PRESENTER_EXISTS",
                    "message": "the library already has a presenter 'anna' (anna.mp4); 'anna' is taken",
                    "hint": "Choose another name, or remove the presenter of that name first.",
                },
            ),
        },
    },
    "getPresenter": {
        "summary": "Get one presenter of the library: its state, what was found, its poster",
        "description": "One presenter, as listPresenters gives each. Poll it after addPresenter until 'state' is "
        "ready (the 'engines' it is prepared for) or failed ('error' says why: no face, a profile view, a broken "
        "file, ...). An unknown name answers 404 NO_SUCH_PRESENTER.",
        "responses": {200: _answer("The presenter.", PRESENTER_READY)},
    },
    "deletePresenter": {
        "summary": "Remove a presenter from the library",
        "description": "Removes the presenter's file, its toml and its poster; jobs already rendering it keep "
        "their own copy. Refused with 409 PRESENTER_BUSY while a job waiting or rendering names it: try again once "
        "that job has finished. Needs an editor key.",
        "responses": {
            200: _answer("Removed.", {"deleted": "anna"}),
            **_forbidden("editor"),
            409: _problem(
                "PRESENTER_BUSY: a job not finished names it.",
                {
                    "code": "PRESENTER_BUSY",
                    "message": "the presenter 'anna' is named by jobs not finished yet: lesson-01",
                    "hint": "Wait until the jobs that name it have finished (or cancel them), then remove it.",
                },
            ),
        },
    },
    "getPresenterPoster": {
        "summary": "Download a presenter's poster (JPEG)",
        "description": "A picture of the presenter with the face, made when it was prepared; 404 until then. The "
        "poster_url of listPresenters and getPresenter points here.",
    },
    "headPresenterPoster": {
        "summary": "The headers of getPresenterPoster, no body",
        "description": "Check that a presenter's poster has been made, and its size, without downloading it.",
    },
    "getPresenterPreview": {
        "summary": "Download a presenter's own video or photo",
        "description": "The file of the presenter as it is in the library, to watch it before naming it in a job. "
        "The preview_url of listPresenters and getPresenter points here.",
    },
    "headPresenterPreview": {
        "summary": "The headers of getPresenterPreview, no body",
        "description": "Check a presenter's own file (its size, its type) without downloading it.",
    },
    "streamEvents": {
        "summary": "Follow jobs live (Server-Sent Events)",
        "description": "A text/event-stream of 'job' events (a status document whenever a job changes), 'removed' "
        "(a job id) and 'machine' (as getHealth). ?job=<id> follows one job. For a tool that cannot keep a "
        "connection open, poll getJob instead.",
    },
}

IDEMPOTENCY_KEY = {
    "description": "Any unique string (a UUID, the workflow's run id): a retry of the same request with the same "
    "key within 24 hours answers the first job again (200) instead of making a second one; the same key with a "
    f"different request answers 409 IDEMPOTENCY_MISMATCH. 1 to {MAX_KEY_LENGTH} printable ASCII characters; "
    "empty: no key.",
    "examples": ["run-2026-01-05-0042"],
}


def operation(operation_id: str) -> dict[str, Any]:
    """The decorator arguments of an operation: its id, summary, description and documented answers."""
    return {"operation_id": operation_id, **OPERATIONS[operation_id]}


def document(schema: dict[str, Any], server_url: str) -> dict[str, Any]:
    """The OpenAPI document FastAPI made, finished for tools: the server's address, the bearer scheme declared and
    applied to every operation, and no 422 answer (invalid parameters are answered 400 BAD_REQUEST)."""
    finished = {**schema, "servers": [{"url": server_url}], "security": [{BEARER: []}]}
    components = dict(finished.get("components", {}))
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An account's API key (heygemd users key NAME KEY-NAME) or the server's web.token "
            "(HEYGEMD_WEB__TOKEN, an admin key), sent as 'Authorization: Bearer <key>'. What a key may do depends "
            "on its account's role: viewer (read), editor (also submit, cancel, retry, change priorities), admin "
            "(also delete, pause and resume); a lower role is answered 403 FORBIDDEN_ROLE. A server without a "
            "token or accounts answers only on this machine's loopback names.",
        }
    }
    schemas = {
        k: v for k, v in components.get("schemas", {}).items() if k not in ("HTTPValidationError", "ValidationError")
    }
    components["schemas"] = schemas
    finished["components"] = components
    finished["paths"] = {
        path: {method: _without_422(op) for method, op in item.items()} for path, item in schema["paths"].items()
    }
    return finished


def _without_422(op: dict[str, Any]) -> dict[str, Any]:
    return {**op, "responses": {code: a for code, a in op.get("responses", {}).items() if code != "422"}}
