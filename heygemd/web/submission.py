"""What POST /api/jobs takes besides a multipart upload, and what makes two submissions the same.

- A job given by URLs, as JSON (``application/json``) or as a form (``application/x-www-form-urlencoded``)::

      {"name": "lesson-01", "audio_url": "https://...", "video_urls": ["https://...", ...],
       "engine": "mouthwarp", "loop_mode": "loop", "crf": 20, "gpu_class": "a100", "callback_url": "https://..."}

  ``video_urls`` is a list (a form repeats the field; a single URL may be given as a string); the options are
  those of an upload (``upload.UPLOAD_OPTIONS``). :func:`parse_url_job` reads it as the multipart reader reads an
  upload (:class:`heygemd.web.upload.Received`), so both go on the same way: the URLs fetched into the staging
  folder (:mod:`heygemd.web.fetch`), then the same completion as an upload.
- :func:`fingerprint`: what an ``Idempotency-Key`` stands for (:mod:`heygemd.idempotency`): the job's name, its
  options and its inputs, each a URL or an uploaded file's name and SHA-256, however the body was encoded (a
  multipart boundary differs on every retry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from heygemd.daemon.jobs import MAX_URL_LENGTH, JobOptions
from heygemd.idempotency import fingerprint as hashed
from heygemd.web.problems import BadUpload
from heygemd.web.upload import MAX_TEXT_BYTES, UPLOAD_OPTIONS, Received, check_inputs, field_problems, parse_options

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
URL_BODIES = frozenset({JSON, FORM})
MAX_BODY_BYTES = 256 * 1024
"""The largest JSON or form body: URLs and options, no files."""
URL_HINT = (
    'Send {"audio_url": "https://...", "video_urls": ["https://...", ...]} and optionally name, engine, loop_mode, '
    "crf, gpu_class, callback_url; or upload the files as multipart/form-data ('audio', 'videos')."
)


class UrlInputsBody(BaseModel):
    """The inputs of a job given by URLs (its options are read by ``upload.parse_options``)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field("", max_length=MAX_TEXT_BYTES)
    audio_url: str | None = Field(None, max_length=MAX_URL_LENGTH)
    video_urls: list[str] = Field(default_factory=list)

    @field_validator("audio_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("video_urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [value] if value.strip() else []
        return value

    @field_validator("video_urls")
    @classmethod
    def _each_url(cls, value: list[str]) -> list[str]:
        for url in value:
            if len(url) > MAX_URL_LENGTH:
                raise ValueError(f"a URL longer than {MAX_URL_LENGTH} characters")
        return [url for url in value if url]


def parse_url_job(kind: str, body: bytes) -> tuple[Received, JobOptions]:
    """The job a JSON (``kind`` JSON) or urlencoded form (FORM) body gives: its inputs (as URLs, in ``Received``)
    and its options. BadUpload when the body is not such a job (unknown fields, no audio, no presenter)."""
    fields = _json_fields(body) if kind == JSON else _form_fields(body)
    unknown = sorted(set(fields) - {*UrlInputsBody.model_fields, *UPLOAD_OPTIONS})
    if unknown:
        raise BadUpload(f"unknown field {unknown[0]!r} in the request body", hint=URL_HINT)
    try:
        inputs = UrlInputsBody.model_validate({k: v for k, v in fields.items() if k in UrlInputsBody.model_fields})
    except ValidationError as exc:
        raise BadUpload(f"invalid job inputs: {field_problems(exc)}", hint=URL_HINT) from None
    check_inputs(int(inputs.audio_url is not None), len(inputs.video_urls))
    received = Received(fields={"name": inputs.name}, audio_url=inputs.audio_url, video_urls=inputs.video_urls)
    return received, parse_options(fields)


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadUpload(f"the request body is not valid JSON ({exc})", hint=URL_HINT) from None
    if not isinstance(data, dict):
        raise BadUpload("the request body is not a JSON object", hint=URL_HINT)
    return data


def _form_fields(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadUpload(f"the request body is not a valid urlencoded form ({exc})", hint=URL_HINT) from None
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name == "video_urls":
            fields.setdefault(name, []).append(value)
        elif name in fields:
            raise BadUpload(f"the field {name!r} is given more than once", hint=URL_HINT)
        else:
            fields[name] = value
    return fields


def fingerprint(received: Received, options: JobOptions) -> str:
    """What an Idempotency-Key stands for: the job's name, options and inputs (URLs; uploaded files by name and
    SHA-256, so ``received`` must come from a reader that hashed them)."""

    def inputs(files: list[str], urls: list[str]) -> list[Mapping[str, str]]:
        uploaded = [{"file": name, "sha256": received.digests.get(name, "")} for name in files]
        return [*uploaded, *({"url": url} for url in urls)]

    request = {
        "name": received.fields.get("name", ""),
        "options": options.model_dump(mode="json", exclude_none=True),
        "audio": inputs(received.audio, [received.audio_url] if received.audio_url else []),
        "videos": inputs(received.videos, received.video_urls),
    }
    return hashed(b"POST /api/jobs", json.dumps(request, sort_keys=True).encode("utf-8"))
