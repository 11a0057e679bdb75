"""One uploaded job: a multipart/form-data body streamed straight into a staging folder, with the limits
checked as the bytes arrive (nothing is spooled anywhere else, nothing is held whole in memory). Every byte of
the body counts: files against web.max_file_mb, and the whole body (files, form fields, part headers) against
web.max_total_mb plus MULTIPART_OVERHEAD, whether or not the request says its length.

Fields: ``audio`` (one file: an audio, or a video whose sound track is used), ``videos`` (one or more files:
videos or still photos), and the optional text fields ``name`` (the job's name) and the job options of
``UPLOAD_OPTIONS`` (written to job.toml). Instead of a file, the audio may be given as a URL (``audio_url``) and
presenters as URLs (``video_urls``, repeated), which the caller downloads (:mod:`heygemd.web.fetch`).

A video given as the audio keeps its name, and job.toml names it as the audio (``audio = "talk.mp4"``), as a
NAS user would: the intake then takes its sound track (as the CLI's ``--audio talk.mp4`` does) and not it as a
presenter, and every message names the file the user gave.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from heygemd.daemon.jobs import MAX_URL_LENGTH, JobOptions
from heygemd.daemon.staging import disk_full, is_disk_full
from heygemd.engine_names import listed
from heygemd.names import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    NameKind,
    classify_name,
    make_windows_safe,
    plain_name,
    unique_name,
)
from heygemd.settings import WebSettings
from heygemd.web.problems import BadUpload, TooLarge

MiB = 1024 * 1024
FILE_FIELDS = frozenset({"audio", "videos"})
UPLOAD_OPTIONS = tuple(name for name in JobOptions.model_fields if name not in ("audio", "naming"))
"""The job.toml options an upload sets as text fields: every ``JobOptions`` field but ``audio`` (the uploaded
audio is the job's only one) and ``naming`` (uploads keep the daemon's output names)."""
URL_FIELDS = ("audio_url", "video_urls")
"""Inputs given by URL instead of as files: the audio, presenters (repeated)."""
TEXT_FIELDS = frozenset({"name", *URL_FIELDS, *UPLOAD_OPTIONS})
MAX_TEXT_BYTES = 1024
LONG_TEXT_FIELDS = frozenset({*URL_FIELDS, "callback_url"})
"""Text fields that hold a URL: up to MAX_URL_LENGTH bytes."""
MAX_NAME_BYTES = 180
MULTIPART_OVERHEAD = 64 * 1024
"""Allowance for part headers, boundaries and text fields on top of web.max_total_mb, for the whole body."""
AUDIO_UPLOADS = AUDIO_SUFFIXES | VIDEO_SUFFIXES
"""What the ``audio`` field takes: an audio file, or a video whose sound track is used."""
PRESENTER_UPLOADS = VIDEO_SUFFIXES | IMAGE_SUFFIXES
"""What the ``videos`` field takes (the presenters of ``names.is_presenter``)."""


def _suffixes(group: frozenset[str]) -> str:
    return " ".join(sorted(group))


AUDIO_KINDS = (
    f"a file ending in {_suffixes(AUDIO_SUFFIXES)}, or a video ({_suffixes(VIDEO_SUFFIXES)}) whose sound track is used"
)
PRESENTER_HINT = (
    f"Presenters are videos ({_suffixes(VIDEO_SUFFIXES)}) or photos ({_suffixes(IMAGE_SUFFIXES)}) of the face."
)


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_files: int
    max_total_bytes: int

    @classmethod
    def from_settings(cls, web: WebSettings) -> "Limits":
        return cls(int(web.max_file_mb * MiB), web.max_files, int(web.max_total_mb * MiB))

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: the files' limit and the allowance for everything around them."""
        return self.max_total_bytes + MULTIPART_OVERHEAD

    def too_large(self, size: int | None = None) -> TooLarge:
        """The upload (``size`` bytes, when its Content-Length says) is over the limit."""
        upload = "the upload" if size is None else f"the upload ({size / MiB:.0f} MiB)"
        return TooLarge(f"{upload} is larger than web.max_total_mb = {self.max_total_bytes / MiB:g} MiB")


@dataclass
class Received:
    """What the body held once it is complete: stored file names, the text fields, the inputs given by URL (not
    fetched yet), and with ``digests`` asked for, each stored file's SHA-256."""

    audio: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    audio_url: str | None = None
    video_urls: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    stored_bytes: int = 0


def boundary_of(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadUpload("the request body is not multipart/form-data")
    return boundary


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class MultipartJob:
    """Feed it the body chunk by chunk (``feed``), then ``finish``; on any error call ``discard`` on the folder.
    ``digests``: hash every file as it arrives (for an Idempotency-Key's fingerprint)."""

    def __init__(self, staging: Path, limits: Limits, content_type: str | None, *, digests: bool = False) -> None:
        self.staging = staging
        self.limits = limits
        self.digests = digests
        self._hash: hashlib._Hash | None = None
        self.received = Received()
        self._used: set[str] = set()
        self._total = 0
        self._body = 0
        self._files = 0
        self._headers: dict[str, bytes] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._file: BinaryIO | None = None
        self._file_name = ""
        self._file_bytes = 0
        self._text_name: str | None = None
        self._text = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            boundary_of(content_type),
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._hname.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._hvalue.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # -- parser callbacks

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        # Values stay bytes: browsers send file names as raw UTF-8, which parse_options_header keeps as bytes.
        self._headers[_decode(bytes(self._hname)).strip().casefold()] = bytes(self._hvalue).strip()
        self._hname.clear()
        self._hvalue.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = _decode(params.get(b"name", b""))
        if b"filename" in params:
            self._open_file(name, _decode(params[b"filename"]))
        elif name in TEXT_FIELDS:
            self._text_name = name
            self._text.clear()
        else:
            raise BadUpload(f"unknown form field {name!r}")

    def _open_file(self, field_name: str, filename: str) -> None:
        if field_name not in FILE_FIELDS:
            raise BadUpload(f"unknown file field {field_name!r} (file {filename!r})")
        self._files += 1
        if self._files > self.limits.max_files:
            raise TooLarge(f"more than {self.limits.max_files} files in one job (the audio included)")
        base = safe_basename(filename)
        if field_name == "audio":
            if not base or Path(base).suffix.casefold() not in AUDIO_UPLOADS:
                raise BadUpload(
                    f"{filename!r} is not an audio file or a video (by its name)",
                    hint=f"The audio is the speech: {AUDIO_KINDS}.",
                )
        elif not base or Path(base).suffix.casefold() not in PRESENTER_UPLOADS:
            raise BadUpload(f"{filename!r} is not a video or a still photo (by its name)", hint=PRESENTER_HINT)
        stored = unique_name(base, self._used)
        try:
            fd = os.open(self.staging / stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o664)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(stored) from None
            raise
        self._file = os.fdopen(fd, "wb")
        self._file_name = stored
        self._file_bytes = 0
        self._hash = hashlib.sha256() if self.digests else None
        (self.received.audio if field_name == "audio" else self.received.videos).append(stored)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._file is None:
            longest = MAX_URL_LENGTH if self._text_name in LONG_TEXT_FIELDS else MAX_TEXT_BYTES
            if len(self._text) + size > longest:
                raise BadUpload(f"the field {self._text_name!r} is longer than {longest} bytes")
            self._text.extend(data[start:end])
            return
        self._file_bytes += size
        self._total += size
        if self._file_bytes > self.limits.max_file_bytes:
            limit = self.limits.max_file_bytes / MiB
            raise TooLarge(f"{self._file_name} is larger than web.max_file_mb = {limit:g} MiB")
        if self._total > self.limits.max_total_bytes:
            raise self.limits.too_large()
        if self._hash is not None:
            self._hash.update(data[start:end])
        try:
            self._file.write(data[start:end])
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self._file_name) from None
            raise

    def _part_end(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full(self._file_name) from None
                raise
            finally:
                self._file = None
            if self._hash is not None:
                self.received.digests[self._file_name] = self._hash.hexdigest()
        elif self._text_name is not None:
            value = _decode(bytes(self._text)).strip()
            if self._text_name == "video_urls":
                if value:
                    self.received.video_urls.append(value)
            elif self._text_name == "audio_url":
                self.received.audio_url = value or None
            else:
                self.received.fields[self._text_name] = value
            self._text_name = None

    def _end(self) -> None:
        self._ended = True

    # -- driving

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the body (TooLarge past the limits, BadUpload when it is not multipart)."""
        self._body += len(chunk)
        if self._body > self.limits.max_body_bytes:
            raise self.limits.too_large()
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadUpload(f"the request body is not valid multipart/form-data ({exc})") from None

    def close(self) -> None:
        """Close a file left open by an aborted body."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> tuple[Received, JobOptions]:
        """Check the body was complete and makes a job: one audio, at least one presenter, valid options."""
        self.close()
        if not self._ended:
            raise BadUpload(
                "the request body ended before its last part", hint="The upload was cut off; send it again."
            )
        got = self.received
        got.stored_bytes = self._total
        check_inputs(len(got.audio) + (got.audio_url is not None), len(got.videos) + len(got.video_urls))
        return got, parse_options(got.fields)


def check_inputs(audio: int, presenters: int) -> None:
    """A job has exactly one audio and at least one presenter, whether uploaded or given by URL (BadUpload)."""
    if audio != 1:
        raise BadUpload(
            f"a job needs exactly one 'audio' (a file, or 'audio_url'), this request has {audio}",
            hint=f"Give one audio, the speech every presenter will say: {AUDIO_KINDS}.",
        )
    if not presenters:
        raise BadUpload(
            "a job needs at least one presenter ('videos' files or 'video_urls'), this request has none",
            hint=PRESENTER_HINT,
        )


def parse_options(fields: Mapping[str, object]) -> JobOptions:
    """The job.toml options from the request's fields (form text, or JSON values; empty or null means "the daemon's
    setting")."""
    values = {k: v for k, v in fields.items() if k in UPLOAD_OPTIONS and v not in (None, "")}
    try:
        return JobOptions.model_validate(values)
    except ValidationError as exc:
        raise BadUpload(
            f"invalid job options: {field_problems(exc)}",
            hint=f"engine: {listed()}; loop_mode: pingpong or loop; crf: 0..51; "
            "gpu_class: lower-case letters, digits, - and _ (a farm's [queue] gpu_class); "
            "latentsync_steps: 1 or more; latentsync_guidance: a number, 0 or more; callback_url: an http(s) "
            "URL on a host the server's [notify] callback_hosts allows.",
        ) from None


def field_problems(exc: ValidationError) -> str:
    """A validation error as one line: ``field = value: problem; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])} = {e['input']}: {e['msg'][:1].lower()}{e['msg'][1:]}"
        for e in exc.errors()
    )


def options_schema() -> dict[str, dict[str, Any]]:
    """The OpenAPI schema of the option fields, from ``JobOptions`` (a form field holds a value or is left out)."""
    properties = JobOptions.model_json_schema()["properties"]
    return {name: _value_schema(properties[name]) for name in UPLOAD_OPTIONS}


def _value_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of an optional field's value: its ``anyOf`` branch other than null, with its description."""
    (value,) = [branch for branch in schema.get("anyOf", [schema]) if branch.get("type") != "null"]
    described = {"description": schema["description"]} if "description" in schema else {}
    return {**value, **described}


def plain_basename(raw: str) -> str:
    """``raw`` reduced to a plain file name: the last path component, NFC, no control characters, no leading
    dots (a hidden name is never part of a job), at most MAX_NAME_BYTES bytes, one a Windows client can open
    (``names.make_windows_safe``). '' when nothing is left."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 10:
            stem, suffix = name, ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return make_windows_safe(name)


def safe_basename(raw: str) -> str:
    """An uploaded file's name as it is stored (``plain_basename``); BadUpload for the names of files still
    being copied or of system clutter, which are never part of a job."""
    name = plain_basename(raw)
    if name and classify_name(name) is not NameKind.NORMAL:
        raise BadUpload(
            f"the name {raw!r} is reserved for files still being copied or for system clutter",
            hint="Rename the file (names like *.part, *.tmp, ~$*, Thumbs.db are never part of a job).",
        )
    return name


def job_name(requested: str, audio: str) -> str:
    """An uploaded job's folder name: the requested name, else the audio file's stem, else ``job``, each reduced
    by ``plain_basename``. A name the intake would pass over (``__MACOSX``, ``lost+found``, ``#recycle``,
    ``*.part``, ...: ``names.plain_name``) is never used: such a job would wait in the inbox for ever."""
    for raw in (requested, Path(audio).stem):
        name = plain_basename(raw)
        if plain_name(name, is_dir=True):
            return name
    return "job"
