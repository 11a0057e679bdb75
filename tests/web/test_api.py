"""The HTTP API with the real app over real folders: submit writes a job as a NAS user would, reads follow the
outbox, ZIP/retry/delete act on real files, and every error is JSON {code, message, hint}."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from heygemd.daemon.claims import ClaimRecord
from heygemd.daemon.jobs import load_options
from heygemd.daemon.status import VideoStatus, utc_now
from heygemd.layout import CLAIM_FILE, CLAIMED, INPUT_DIR
from tests.web.webserver import finished_job, renderer_here, tree

WAV = b"RIFF....WAVEfmt fake audio bytes"
MP4 = b"\x00\x00\x00\x18ftypmp42 fake video bytes" * 10


def upload(client, audio=("lesson.wav", WAV), videos=(("anna.mp4", MP4), ("bob.mov", MP4)), **fields):
    files = [("audio", audio)] if audio else []
    files += [("videos", v) for v in videos]
    return client.post("/api/jobs", files=files, data=fields)


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["message"] and isinstance(body["hint"], str) and body["hint"]
    return body


def test_submit_writes_a_complete_job_folder_into_the_inbox(make_client) -> None:
    client, settings = make_client()
    response = upload(client, name="lesson 01", engine="mouthwarp", loop_mode="loop", crf="20")
    assert response.status_code == 201, response.text
    assert response.json() == {"job_id": "lesson 01", "status_url": "/api/jobs/lesson%2001"}
    job = settings.paths.inbox / "lesson 01"
    assert sorted(p.name for p in job.iterdir()) == [".ready", "anna.mp4", "bob.mov", "job.toml", "lesson.wav"]
    assert (job / "anna.mp4").read_bytes() == MP4 and (job / "lesson.wav").read_bytes() == WAV
    assert (job / "job.toml").read_text() == 'engine = "mouthwarp"\nloop_mode = "loop"\ncrf = 20\n'
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []  # staging renamed away, nothing left

    status = client.get("/api/jobs/lesson 01").json()
    assert status["state"] == "queued" and status["audio"]["file"] == "lesson.wav"
    assert [v["input"] for v in status["videos"]] == ["anna.mp4", "bob.mov"]


def test_submit_writes_the_engine_settings_of_the_form_as_job_toml_reads_them(make_client) -> None:
    client, settings = make_client()
    renderer_here(settings.paths.state_dir, ("latentsync", "mouthwarp"))  # a GPU host with LatentSync's files
    response = upload(client, engine="latentsync", latentsync_steps="8", latentsync_guidance="2")
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / response.json()["job_id"]
    text = (job / "job.toml").read_text()
    assert text == 'engine = "latentsync"\nlatentsync_steps = 8\nlatentsync_guidance = 2.0\n'
    options = load_options(job / "job.toml")
    assert options.engine_settings() == {"latentsync_steps": 8, "latentsync_guidance": 2.0}

    refused = upload(client, engine="latentsync", latentsync_guidance="nan")
    body = assert_problem(refused, 400, "BAD_UPLOAD")
    assert "latentsync_guidance" in body["message"] and "latentsync_guidance" in body["hint"]


def test_submit_picks_a_name_free_in_inbox_claims_and_outbox(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson")
    (settings.paths.state_dir / CLAIMED / "lesson-2").mkdir(parents=True)
    ids = [upload(client).json()["job_id"] for _ in range(2)]
    assert ids == ["lesson-3", "lesson-4"]  # default name: the audio's stem
    assert (settings.paths.inbox / "lesson-3" / ".ready").is_file()


def test_upload_names_are_reduced_to_safe_basenames(make_client, tmp_path: Path) -> None:
    client, settings = make_client()
    before = set(tree(tmp_path))
    response = upload(
        client,
        audio=("../../../etc/passwd.wav", WAV),
        videos=(
            ("../../outbox/evil.mp4", MP4),
            ("..\\..\\win.mp4", MP4),
            ("/abs/.hidden.mp4", MP4),
            ("anna.mp4", MP4),
            ("anna.mp4", MP4),
        ),
        name="../../outbox/x",
    )
    assert response.status_code == 201, response.text
    assert response.json()["job_id"] == "x"
    job = settings.paths.inbox / "x"
    assert sorted(p.name for p in job.iterdir()) == [
        ".ready",
        "anna-2.mp4",
        "anna.mp4",
        "evil.mp4",
        "hidden.mp4",
        "passwd.wav",
        "win.mp4",
    ]
    new = set(tree(tmp_path)) - before
    assert all(p.startswith("inbox/") for p in new), sorted(new)  # nothing written anywhere else


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"audio": None}, "exactly one 'audio'"),
        ({"videos": ()}, "at least one"),
        ({"audio": ("notes.txt", b"hello")}, "not an audio file"),
        ({"videos": (("slides.pdf", b"%PDF"),)}, "not a video"),
        ({"videos": (("clip.mp4.part", MP4),)}, "reserved"),
        ({"crf": "99"}, "crf"),
        ({"engine": "magic"}, "engine"),
        ({"gpu_class": "A100 GPUs"}, "gpu_class"),
    ],
)
def test_bad_uploads_get_a_json_error_and_leave_nothing(make_client, kwargs, what) -> None:
    client, settings = make_client()
    body = assert_problem(upload(client, **kwargs), 400, "BAD_UPLOAD")
    assert what in body["message"]
    assert [p.name for p in settings.paths.inbox.iterdir()] == [".heygemd"]
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []


def test_unknown_form_fields_and_non_multipart_bodies_are_refused(make_client) -> None:
    client, _ = make_client()
    assert_problem(
        client.post("/api/jobs", files=[("audio", ("a.wav", WAV)), ("script", ("x.mp4", MP4))]), 400, "BAD_UPLOAD"
    )
    assert_problem(client.post("/api/jobs", json={"audio": "a.wav"}), 400, "BAD_UPLOAD")


def test_oversize_uploads_are_refused_and_leave_nothing(make_client) -> None:
    client, settings = make_client("max_file_mb = 0.001\nmax_total_mb = 0.002\nmax_files = 3\n")
    body = assert_problem(upload(client, videos=(("anna.mp4", b"x" * 2000),)), 413, "UPLOAD_TOO_LARGE")
    assert "anna.mp4" in body["message"] and "max_file_mb" in body["message"]
    body = assert_problem(
        upload(client, videos=(("a.mp4", b"x" * 900), ("b.mp4", b"x" * 900), ("c.mp4", b"x" * 900))),
        413,
        "UPLOAD_TOO_LARGE",
    )
    assert "more than 3 files" in body["message"] or "max_total_mb" in body["message"]
    assert_problem(
        upload(client, videos=(("a.mp4", b"x" * 800), ("b.mp4", b"x" * 800), ("c.mp4", b"x" * 800))),
        413,
        "UPLOAD_TOO_LARGE",
    )
    assert_problem(upload(client, audio=("a.wav", b"x"), videos=(("b.mp4", b"x"),) * 3), 413, "UPLOAD_TOO_LARGE")
    big = client.post("/api/jobs", content=b"x" * 200_000, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_problem(big, 413, "UPLOAD_TOO_LARGE")  # refused from its Content-Length, before reading it
    assert [p.name for p in settings.paths.inbox.iterdir()] == [".heygemd"]
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []


def test_job_list_is_paged_newest_first_and_includes_queued_jobs(make_client) -> None:
    client, settings = make_client("page_size = 2\n")
    for n, minutes in ((1, 30), (2, 20), (3, 10)):
        finished_job(settings.paths.outbox, f"job-{n}", claimed_minutes_ago=minutes)
    assert upload(client, name="fresh").status_code == 201
    first = client.get("/api/jobs").json()
    assert (first["total"], first["pages"], first["page"]) == (4, 2, 1)
    assert [j["job_id"] for j in first["jobs"]] == ["fresh", "job-3"]
    assert first["jobs"][0]["state"] == "queued"
    second = client.get("/api/jobs", params={"page": 2}).json()
    assert [j["job_id"] for j in second["jobs"]] == ["job-2", "job-1"]
    assert_problem(client.get("/api/jobs", params={"page": 0}), 400, "BAD_REQUEST")


def test_one_job_is_its_status_document_and_its_files_download(make_client) -> None:
    client, settings = make_client()
    written = finished_job(settings.paths.outbox, "lesson-01")
    assert client.get("/api/jobs/lesson-01").json() == written.model_dump(mode="json")
    video = client.get("/api/jobs/lesson-01/files/anna.mp4")
    assert video.status_code == 200 and video.content == (settings.paths.outbox / "lesson-01" / "anna.mp4").read_bytes()
    assert video.headers["content-type"] == "video/mp4"
    part = client.get("/api/jobs/lesson-01/files/anna.mp4", headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == video.content[4:12]  # the player can seek
    attachment = client.get("/api/jobs/lesson-01/files/anna.mp4", params={"download": "true"})
    assert attachment.headers["content-disposition"].startswith("attachment")
    assert client.get("/api/jobs/lesson-01/files/job.log").text.startswith('{"event": "job.started"')
    assert_problem(client.get("/api/jobs/nope"), 404, "NOT_FOUND")
    assert_problem(client.get("/api/jobs/lesson-01/files/nope.mp4"), 404, "NOT_FOUND")
    assert_problem(client.get("/api/no/such/route"), 404, "NOT_FOUND")


def test_no_path_outside_the_outbox_is_served_not_even_through_symlinks(make_client, tmp_path: Path) -> None:
    client, settings = make_client()
    outbox = settings.paths.outbox
    finished_job(outbox, "lesson-01")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (outbox / "lesson-01" / "link.mp4").symlink_to(secret)
    (outbox / "lesson-01" / ".hidden.mp4").write_text("tmp")
    (outbox / "linked-job").symlink_to(tmp_path)
    (outbox / "evil").mkdir()
    for path in (
        "/api/jobs/lesson-01/files/link.mp4",
        "/api/jobs/lesson-01/files/.hidden.mp4",
        "/api/jobs/lesson-01/files/..%2F..%2Fsecret.txt",
        "/api/jobs/lesson-01/files/%2E%2E",
        "/api/jobs/..%2Fsecret.txt",
        "/api/jobs/linked-job/files/secret.txt",
        "/api/jobs/linked-job",
        "/api/jobs/linked-job/outputs.zip",
        "/api/jobs/%2E%2E/files/secret.txt",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "top secret" not in response.text
    names = zipfile.ZipFile(io.BytesIO(client.get("/api/jobs/lesson-01/outputs.zip").content)).namelist()
    assert "link.mp4" not in names and ".hidden.mp4" not in names


def test_outputs_zip_holds_exactly_the_outbox_files(make_client) -> None:
    client, settings = make_client()
    big = os.urandom(3 * 1024 * 1024 + 17)  # several streamed chunks
    finished_job(settings.paths.outbox, "lesson-01", files={"anna.mp4": big, "anna.jpg": b"\xff\xd8poster"})
    with client.stream("GET", "/api/jobs/lesson-01/outputs.zip") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert "lesson-01.zip" in response.headers["content-disposition"]
        assert "content-length" not in response.headers  # streamed, not built first
        data = b"".join(response.iter_bytes())
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    folder = settings.paths.outbox / "lesson-01"
    assert sorted(archive.namelist()) == sorted(p.name for p in folder.iterdir())
    for name in archive.namelist():
        assert archive.read(name) == (folder / name).read_bytes(), name


def _archive_inputs(settings, status, files: dict[str, bytes]) -> Path:
    """The inputs as finish_inputs archives them: <state>/archive/<day>/<id>/{claim.json,input/}."""
    folder = settings.paths.state_dir / "archive" / status.claimed.strftime("%Y-%m-%d") / status.job_id
    (folder / INPUT_DIR).mkdir(parents=True)
    record = ClaimRecord(job_id=status.job_id, name=status.job_name, claimed_at=status.claimed, host="h", pid=1)
    (folder / CLAIM_FILE).write_text(record.model_dump_json())
    for name, data in files.items():
        (folder / INPUT_DIR / name).write_bytes(data)
    return folder


def test_retry_submits_the_failed_videos_again_as_a_new_job(make_client) -> None:
    client, settings = make_client()
    videos = [
        VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4"),
        VideoStatus(input="bob.mov", state="failed", progress=0.3),
    ]
    status = finished_job(settings.paths.outbox, "lesson", state="partial", videos=videos)
    _archive_inputs(
        settings, status, {"lesson.wav": WAV, "anna.mp4": MP4, "bob.mov": MP4 + b"bob", "job.toml": b"crf = 20\n"}
    )
    response = client.post("/api/jobs/lesson/retry")
    assert response.status_code == 201, response.text
    assert response.json()["job_id"] == "lesson-retry"
    job = settings.paths.inbox / "lesson-retry"
    assert sorted(p.name for p in job.iterdir()) == [".ready", "bob.mov", "job.toml", "lesson.wav"]
    assert (job / "bob.mov").read_bytes() == MP4 + b"bob"
    assert client.post("/api/jobs/lesson/retry").json()["job_id"] == "lesson-retry-2"


def test_a_retry_whose_engine_is_not_installed_says_how_to_retry_with_one_that_is(make_client) -> None:
    client, settings = make_client()
    videos = [VideoStatus(input="bob.mov", state="failed", progress=0.3)]
    status = finished_job(settings.paths.outbox, "lesson", state="failed", videos=videos)
    _archive_inputs(settings, status, {"lesson.wav": WAV, "bob.mov": MP4, "job.toml": b'engine = "wav2lip"\n'})
    body = assert_problem(client.post("/api/jobs/lesson/retry"), 400, "ENGINE_NOT_INSTALLED")
    assert "wav2lip_gan.pth" in body["message"], body
    assert "heygemd retry lesson --engine mouthwarp" in body["hint"] and "?engine=mouthwarp" in body["hint"], body
    assert client.post("/api/jobs/lesson/retry?engine=mouthwarp").status_code == 201  # as the hint says


def test_the_retry_of_a_job_with_a_long_name_gets_a_name_that_fits(make_client) -> None:
    client, settings = make_client()
    name = "ü" * 125  # 250 bytes: "<name>-retry" would be 256, one over what a file system takes
    videos = [VideoStatus(input="bob.mov", state="failed", progress=0.3)]
    status = finished_job(settings.paths.outbox, name, state="failed", videos=videos)
    _archive_inputs(settings, status, {"lesson.wav": WAV, "bob.mov": MP4})
    first, second = (client.post(f"/api/jobs/{name}/retry") for _ in range(2))
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["job_id"] == "ü" * 124 + "-retry"  # cut on a character, the "-retry" kept
    assert second.json()["job_id"] == "ü" * 123 + "-retry-2"  # and the number
    assert (settings.paths.inbox / second.json()["job_id"] / "bob.mov").read_bytes() == MP4


def test_retry_refuses_without_failed_videos_or_archived_inputs(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "good")
    assert_problem(client.post("/api/jobs/good/retry"), 409, "NOTHING_TO_RETRY")
    finished_job(
        settings.paths.outbox,
        "gone",
        state="failed",
        videos=[VideoStatus(input="bob.mov", state="failed", progress=0.3)],
    )
    assert_problem(client.post("/api/jobs/gone/retry"), 410, "INPUTS_GONE")
    finished_job(
        settings.paths.outbox,
        "busy",
        state="processing",
        videos=[VideoStatus(input="bob.mov", state="failed", progress=0.3)],
    )
    assert_problem(client.post("/api/jobs/busy/retry"), 409, "JOB_BUSY")


def test_delete_removes_the_outbox_folder_and_archived_inputs(make_client, tmp_path: Path) -> None:
    client, settings = make_client()
    status = finished_job(settings.paths.outbox, "lesson")
    archived = _archive_inputs(settings, status, {"lesson.wav": WAV, "anna.mp4": MP4})
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (settings.paths.outbox / "lesson" / "link.txt").symlink_to(outside)
    other = finished_job(settings.paths.outbox, "other")
    response = client.delete("/api/jobs/lesson")
    assert response.status_code == 200 and response.json() == {"deleted": "lesson"}
    assert not (settings.paths.outbox / "lesson").exists() and not archived.exists()
    assert outside.read_text() == "keep me"  # the symlink was removed, not followed
    assert (settings.paths.outbox / ".heygemd-trash").is_dir()
    assert list((settings.paths.outbox / ".heygemd-trash").iterdir()) == []
    assert [j["job_id"] for j in client.get("/api/jobs").json()["jobs"]] == [other.job_id]
    assert_problem(client.delete("/api/jobs/lesson"), 404, "NOT_FOUND")


def test_delete_removes_a_job_whose_name_is_as_long_as_names_can_be(make_client) -> None:
    client, settings = make_client()
    name = "ß" * 127 + "x"  # 255 bytes: its trash name (the job's, plus a random part) must be cut to fit
    status = finished_job(settings.paths.outbox, name)
    archived = _archive_inputs(settings, status, {"lesson.wav": WAV, "anna.mp4": MP4})
    response = client.delete(f"/api/jobs/{name}")
    assert response.status_code == 200, response.text
    assert not (settings.paths.outbox / name).exists() and not archived.exists()


def test_delete_refuses_queued_and_running_jobs(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "running", state="processing")
    assert_problem(client.delete("/api/jobs/running"), 409, "JOB_BUSY")
    assert upload(client, name="waiting").status_code == 201
    assert_problem(client.delete("/api/jobs/waiting"), 409, "JOB_BUSY")
    assert (settings.paths.outbox / "running").is_dir() and (settings.paths.inbox / "waiting").is_dir()


def test_health_says_which_engine_and_whether_busy(make_client) -> None:
    client, settings = make_client()
    assert client.get("/api/health").json() | {"version": "x"} == {
        "status": "ok",
        "version": "x",
        "engine": "mouthwarp",
        "busy": False,
        "current": None,
        "queued": 0,
        "workers": 0,
        "engines": ["mouthwarp"],
        "ignored": [],
        "taking_jobs": True,
        "paused": False,
        "paused_by": None,
        "hours": [],
        "waits_for": None,
    }
    upload(client, name="waiting")
    claim = settings.paths.state_dir / CLAIMED / "running"
    (claim / INPUT_DIR).mkdir(parents=True)
    health = client.get("/api/health").json()
    assert (health["busy"], health["current"], health["queued"]) == (True, "running", 1)


def test_health_counts_the_live_renderers_from_their_heartbeats(make_client, tmp_path: Path) -> None:
    """A renderer's record counts while its process lives and beats; a killed one's, or a silent host's, does not."""
    import subprocess
    import sys
    from datetime import timedelta

    from heygemd.daemon.presence import MISSED_BEATS, Renderer

    client, settings = make_client()
    state = settings.paths.state_dir
    assert client.get("/api/health").json()["workers"] == 0
    renderer_here(state, ("musetalk", "mouthwarp"))
    health = client.get("/api/health").json()
    assert health["workers"] == 1 and health["engines"] == ["musetalk", "mouthwarp"]  # the renderer's engines

    script = (
        "import sys\nfrom heygemd.daemon.presence import PresenceFile, this_process\n"
        "from heygemd.daemon.status import utc_now\nfrom pathlib import Path\n"
        "PresenceFile(Path(sys.argv[1]), lambda: this_process('daemon', 'heygemd run', ['wav2lip'], utc_now()))"
        ".announce()\nprint('written', flush=True)\nsys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
        assert client.get("/api/health").json()["workers"] == 2
    finally:
        child.kill()
        child.wait()
    assert client.get("/api/health").json()["workers"] == 1, "a killed renderer's record does not count"

    silent = Renderer.model_validate_json(next((state / "renderers").glob("*.json")).read_bytes()).model_copy(
        update={"host": "gpu-elsewhere", "pid": 1}
    )
    silent = silent.model_copy(update={"beat": silent.beat - timedelta(seconds=silent.interval_s * MISSED_BEATS + 1)})
    (state / "renderers" / "gpu-elsewhere-1.json").write_text(silent.model_dump_json())
    assert client.get("/api/health").json()["workers"] == 1, "a host that missed its beats is not counted"
    (state / "renderers" / "gpu-elsewhere-1.json").write_text(
        silent.model_copy(update={"beat": utc_now()}).model_dump_json()
    )
    assert client.get("/api/health").json()["workers"] == 2, "one that beats, on another host, is"


def test_an_engine_without_its_files_is_refused_at_submission(make_client) -> None:
    client, settings = make_client()
    body = assert_problem(upload(client, name="lesson", engine="musetalk"), 400, "ENGINE_NOT_INSTALLED")
    assert body["message"].startswith("engine 'musetalk' is not installed: models/musetalk/ lacks ")
    assert "musetalkV15/unet.pth" in body["message"] and "huggingface.co/TMElyralab/MuseTalk" in body["hint"]
    body = assert_problem(upload(client, name="lesson", engine="wav2lip"), 400, "ENGINE_NOT_INSTALLED")
    assert body["message"] == "engine 'wav2lip' is not installed: models/ lacks wav2lip_gan.pth or wav2lip.pth"
    assert sorted(p.name for p in settings.paths.inbox.iterdir()) == [".heygemd"]  # nothing queued, nothing left
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []
    assert upload(client, name="lesson", engine="auto").status_code == 201  # auto takes what is there

    # a live renderer's engines decide, not the web server's own models folder
    (settings.paths.models / "wav2lip_gan.pth").write_bytes(b"weights on the web server's host only")
    renderer_here(settings.paths.state_dir, ("musetalk", "mouthwarp"))
    assert upload(client, name="gpu", engine="musetalk").status_code == 201
    body = assert_problem(upload(client, name="lesson", engine="wav2lip"), 400, "ENGINE_NOT_INSTALLED")
    assert body["message"].startswith("engine 'wav2lip' is not installed on any running renderer: heygemd run on ")
    assert body["message"].endswith("(musetalk, mouthwarp)")


def test_openapi_description_lists_every_endpoint(make_client) -> None:
    client, _ = make_client()
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/files/{name}",
        "/api/jobs/{job_id}/outputs.zip",
        "/api/jobs/{job_id}/retry",
        "/api/jobs/{job_id}/cancel",
        "/api/health",
        "/api/events",
    }
    assert "multipart/form-data" in spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    page = client.get("/docs")
    assert page.status_code == 200 and "/api/jobs/{job_id}/outputs.zip" in page.text
    assert "cdn" not in page.text.casefold()


def test_heygemd_never_writes_through_a_symlinked_staging_or_trash_folder(make_client, tmp_path: Path) -> None:
    client, settings = make_client()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.paths.state_dir / "uploads").symlink_to(elsewhere)
    assert_problem(upload(client), 500, "BAD_CONFIG")
    finished_job(settings.paths.outbox, "lesson")
    (settings.paths.outbox / ".heygemd-trash").symlink_to(elsewhere)
    assert_problem(client.delete("/api/jobs/lesson"), 500, "BAD_CONFIG")
    assert list(elsewhere.iterdir()) == [] and (settings.paths.outbox / "lesson" / "status.json").is_file()


def test_names_in_any_script_work_end_to_end(make_client) -> None:
    client, settings = make_client()
    response = upload(client, audio=("讲座.wav", WAV), videos=(("Ana María.mp4", MP4),), name="课程 01")
    assert response.status_code == 201, response.text
    assert response.json() == {"job_id": "课程 01", "status_url": "/api/jobs/%E8%AF%BE%E7%A8%8B%2001"}
    stored = sorted(p.name for p in (settings.paths.inbox / "课程 01").iterdir())
    assert stored == [".ready", "Ana María.mp4", "讲座.wav"]
    assert client.get(response.json()["status_url"]).json()["audio"]["file"] == "讲座.wav"
    finished_job(settings.paths.outbox, "课程 00")
    zipped = client.get("/api/jobs/课程 00/outputs.zip")
    assert zipped.headers["content-disposition"] == (
        "attachment; filename=\"__ 00.zip\"; filename*=UTF-8''%E8%AF%BE%E7%A8%8B%2000.zip"
    )
    assert 'href="/jobs/%E8%AF%BE%E7%A8%8B%2000"' in client.get("/").text


def test_cancel_a_waiting_job_at_once_then_retry_it(make_client) -> None:
    client, settings = make_client()
    assert upload(client, name="waiting").status_code == 201
    response = client.post("/api/jobs/waiting/cancel")
    assert response.status_code == 202, response.text
    assert response.json() == {"job_id": "waiting", "state": "cancelled", "status_url": "/api/jobs/waiting"}
    assert not (settings.paths.inbox / "waiting").exists(), "a cancelled waiting job never starts"
    status = client.get("/api/jobs/waiting").json()
    assert status["state"] == "cancelled" and status["cancel"]["by"] == "web local from testclient"
    assert [(v["input"], v["state"]) for v in status["videos"]] == [("anna.mp4", "cancelled"), ("bob.mov", "cancelled")]
    assert [j["state"] for j in client.get("/api/jobs").json()["jobs"]] == ["cancelled"]

    retried = client.post("/api/jobs/waiting/retry")
    assert retried.status_code == 201, retried.text
    new = settings.paths.inbox / retried.json()["job_id"]
    assert sorted(p.name for p in new.iterdir()) == [".ready", "anna.mp4", "bob.mov", "lesson.wav"]
    assert (new / "bob.mov").read_bytes() == MP4


def test_cancel_a_rendering_job_asks_its_worker(make_client) -> None:
    from heygemd.daemon import claims, readiness
    from heygemd.daemon.cancel import read_request

    client, settings = make_client()
    assert upload(client, name="running").status_code == 201
    claimed = claims.claim(readiness.Candidate("running", settings.paths.inbox / "running"), settings.paths.state_dir)
    assert claimed is not None
    finished_job(settings.paths.outbox, "running", state="processing")
    response = client.post("/api/jobs/running/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "cancelling"
    request = read_request(claimed.path)
    assert request is not None and request.by == "web local from testclient"
    assert client.get("/api/jobs/running").json()["state"] == "processing", "the worker writes the outcome"


def test_cancel_refuses_finished_and_unknown_jobs(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson", state="partial")
    body = assert_problem(client.post("/api/jobs/lesson/cancel"), 409, "ALREADY_DONE")
    assert "'lesson' is already partial" in body["message"]
    assert "heygemd delete lesson" in body["hint"] and "Delete" in body["hint"], body  # the CLI's way and the page's
    assert_problem(client.post("/api/jobs/nope/cancel"), 404, "NO_SUCH_JOB")
    assert client.post("/api/jobs/..%2Fetc/cancel").status_code == 404


def test_head_on_a_file_and_on_the_zip_answers_the_headers_without_a_body(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson-01")
    size = (settings.paths.outbox / "lesson-01" / "anna.mp4").stat().st_size
    got = client.get("/api/jobs/lesson-01/files/anna.mp4", params={"download": "true"})
    head = client.head("/api/jobs/lesson-01/files/anna.mp4", params={"download": "true"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size) == got.headers["content-length"]
    for name in ("content-type", "content-disposition", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == got.headers[name], name
    zipped = client.head("/api/jobs/lesson-01/outputs.zip")
    assert zipped.status_code == 200 and zipped.content == b""
    assert (
        zipped.headers["content-type"] == "application/zip" and "lesson-01.zip" in zipped.headers["content-disposition"]
    )
    assert client.head("/api/jobs/lesson-01/files/nope.mp4").status_code == 404
    assert client.head("/api/jobs/nope/outputs.zip").status_code == 404


def test_downloads_are_named_after_the_job_and_the_presenter(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson-01")
    finished_job(settings.paths.outbox, "课程 01", files={"Ana María.mp4": MP4})
    named = client.get("/api/jobs/lesson-01/files/anna.mp4", params={"download": "true"})
    assert named.headers["content-disposition"] == (
        "attachment; filename=\"lesson-01 - anna.mp4\"; filename*=UTF-8''lesson-01%20-%20anna.mp4"
    )
    inline = client.get("/api/jobs/lesson-01/files/anna.mp4")  # the player's "save as" gets the same name
    assert inline.headers["content-disposition"].startswith('inline; filename="lesson-01 - anna.mp4"')
    unicode = client.get("/api/jobs/课程 01/files/Ana María.mp4", params={"download": "true"})
    assert unicode.headers["content-disposition"] == (
        'attachment; filename="__ 01 - Ana Mar_a.mp4"; '
        "filename*=UTF-8''%E8%AF%BE%E7%A8%8B%2001%20-%20Ana%20Mar%C3%ADa.mp4"
    )
    assert sorted(p.name for p in (settings.paths.outbox / "lesson-01").iterdir()) == [
        "anna.jpg",
        "anna.mp4",
        "job.log",
        "status.json",
    ]  # the files on disk keep their names


def test_a_video_as_the_audio_keeps_its_name_and_job_toml_names_it_the_audio(make_client) -> None:
    from heygemd.daemon.jobs import load_job

    client, settings = make_client()
    response = upload(client, audio=("talk.mp4", MP4 + b"talk"), videos=(("talk.mp4", MP4), ("bob.mov", MP4)))
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / response.json()["job_id"]
    assert response.json()["job_id"] == "talk"
    assert sorted(p.name for p in job.iterdir()) == [".ready", "bob.mov", "job.toml", "talk-2.mp4", "talk.mp4"]
    assert (job / "talk.mp4").read_bytes() == MP4 + b"talk"  # the video itself, under its name: its sound is used
    assert (job / "job.toml").read_text() == 'audio = "talk.mp4"\n'
    spec = load_job(job)
    assert spec.audio.name == "talk.mp4" and [v.name for v in spec.videos] == ["bob.mov", "talk-2.mp4"]
    assert client.get("/api/jobs/talk").json()["audio"]["file"] == "talk.mp4"

    photo = assert_problem(upload(client, audio=("face.jpg", b"\xff\xd8jpg")), 400, "BAD_UPLOAD")
    assert "'face.jpg' is not an audio file or a video" in photo["message"]
    assert ".mp3" in photo["hint"] and ".mp4" in photo["hint"] and "multipart" not in photo["hint"]


def test_upload_errors_say_what_to_do_in_plain_words(make_client) -> None:
    client, _ = make_client()
    pdf = assert_problem(upload(client, videos=(("slides.pdf", b"%PDF"),)), 400, "BAD_UPLOAD")
    assert ".mp4" in pdf["hint"] and ".jpg" in pdf["hint"] and "multipart" not in pdf["hint"]
    none = assert_problem(upload(client, audio=None), 400, "BAD_UPLOAD")
    assert "multipart" not in none["hint"] and "speech" in none["hint"]
    crf = assert_problem(upload(client, crf="80"), 400, "BAD_UPLOAD")
    assert "crf" in crf["message"] and "80" in crf["message"] and "multipart" not in crf["hint"]
    protocol = assert_problem(client.post("/api/jobs", json={"audio": "a.wav"}), 400, "BAD_UPLOAD")
    assert "multipart/form-data" in protocol["hint"]  # only a request no form sends gets the API's wording


def test_a_job_that_failed_as_a_whole_is_retried_once_its_cause_is_fixed(
    make_client, heygemd_bin: Path, media, tmp_path: Path
) -> None:
    """Two audios and no job.toml saying which: the job fails as a whole (BAD_JOB), its video not started and its
    hint naming the archive folder of its files; fixed there, the retry takes every file and renders."""
    import re
    import shutil
    import subprocess

    client, settings = make_client()
    job = settings.paths.inbox / "lesson"
    job.mkdir()
    shutil.copy(media.speech, job / "take-1.wav")
    shutil.copy(media.speech, job / "take-2.wav")
    shutil.copy(media.face_a, job / "anna.mp4")
    (job / ".ready").touch()

    def once() -> None:
        proc = subprocess.run(
            [str(heygemd_bin), "--config", str(tmp_path / "heygemd.toml"), "once"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "HEYGEMD_LOGGING__FORMAT": "json"},
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    once()
    failed = client.get("/api/jobs/lesson").json()
    assert failed["state"] == "failed" and failed["error"]["code"] == "BAD_JOB"
    assert failed["error"]["message"] == 'lesson/: several audio files in the job folder: "take-1.wav", "take-2.wav"'
    assert [(v["input"], v["state"]) for v in failed["videos"]] == [("anna.mp4", "not_started")]
    kept = re.search(
        r"The job's files are kept in (inbox/\.heygemd/archive/[0-9-]+/lesson/input/)", failed["error"]["hint"]
    )
    assert kept, failed["error"]["hint"]
    archived = tmp_path / kept.group(1)
    assert sorted(p.name for p in archived.iterdir()) == [".ready", "anna.mp4", "take-1.wav", "take-2.wav"]
    page = client.get("/jobs/lesson").text
    assert "Retry the job" in page and "not_started" in page and "not started: the job failed" in page

    (archived / "job.toml").write_text('audio = "take-2.wav"\n')  # the fix, where the hint says
    response = client.post("/api/jobs/lesson/retry")
    assert response.status_code == 201, response.text
    assert response.json()["job_id"] == "lesson-retry"
    again = settings.paths.inbox / "lesson-retry"
    assert sorted(p.name for p in again.iterdir()) == [".ready", "anna.mp4", "job.toml", "take-1.wav", "take-2.wav"]
    once()
    done = client.get("/api/jobs/lesson-retry").json()
    assert done["state"] == "done" and done["audio"]["file"] == "take-2.wav", done
    assert [(v["input"], v["state"]) for v in done["videos"]] == [("anna.mp4", "done")]
    assert client.get("/api/jobs/lesson").json()["state"] == "failed", "the original job stays as it was"
