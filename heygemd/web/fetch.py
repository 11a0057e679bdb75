"""Job inputs given by URL (``audio_url``, ``video_urls``): heygemd downloads each itself, streamed into the job's
staging folder under the rules of an upload (:mod:`heygemd.web.upload`: web.max_file_mb, web.max_files,
web.max_total_mb, the audio and presenter suffixes; DISK_FULL as :mod:`heygemd.daemon.staging` reports it), and
only from the hosts of ``[web] fetch_hosts`` (:mod:`heygemd.hosts`: every address checked when connecting,
link-local and cloud metadata addresses refused, each redirect checked like the first URL, MAX_REDIRECTS at most;
each step within ``web.fetch_timeout``, and all the job's downloads together within ``web.fetch_deadline``: a
server that sends a byte now and then holds the submission no longer than that).

A URL that cannot be used fails the submission: FETCH_NOT_ALLOWED (a host or address not allowed), FETCH_FAILED (no
answer, an error answer, too many redirects, past the deadline), UPLOAD_TOO_LARGE, BAD_UPLOAD (not an audio or
presenter file, not an http(s) URL), DISK_FULL; each names the field and the URL's host, never the whole URL (it
may carry a token). A file begun is removed again, so the caller discards an empty staging folder, as after a failed
upload.

The stored name is the server's Content-Disposition file name, else the last part of the URL's path (the last
redirect's), reduced as an uploaded name is (:func:`heygemd.web.upload.safe_basename`); when it does not end in a
suffix the field takes, the suffix of its Content-Type (CONTENT_TYPES) is put in its place.
"""

from __future__ import annotations

import os
import time
from email.message import Message
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import unquote

import httpx

from heygemd.daemon.staging import disk_full, is_disk_full
from heygemd.errors import FetchFailed, FetchNotAllowed
from heygemd.hosts import AllowList, Resolver, system_resolver
from heygemd.names import unique_name
from heygemd.outgoing import Outgoing, SendFailed, host_of, parse_url
from heygemd.settings import WebSettings
from heygemd.web.problems import BadUpload, TooLarge
from heygemd.web.upload import (
    AUDIO_KINDS,
    AUDIO_UPLOADS,
    PRESENTER_HINT,
    PRESENTER_UPLOADS,
    Limits,
    MiB,
    Received,
    safe_basename,
)

MAX_REDIRECTS = 5

Role = Literal["audio", "presenter"]

CONTENT_TYPES: dict[str, str] = {
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/wave": ".wav",
    "audio/x-wav": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/aac": ".aac",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/x-ms-wma": ".wma",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
    "video/webm": ".webm",
    "video/x-msvideo": ".avi",
    "video/x-m4v": ".m4v",
    "video/mpeg": ".mpg",
    "video/3gpp": ".3gp",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/bmp": ".bmp",
    "image/webp": ".webp",
}
"""The suffix a Content-Type stands for, among those heygemd takes (``heygemd.names``' media suffixes)."""


def _disposition_name(value: str | None) -> str:
    """The file name a Content-Disposition header gives (RFC 6266, ``filename*`` included), '' when none."""
    if not value:
        return ""
    header = Message()
    header["content-disposition"] = value
    return header.get_filename() or ""


class UrlInputs:
    """Downloads one job's URL inputs into ``staging`` (count and total shared by all of them, as in one upload;
    ``uploaded``: what an upload of the same job already stored there, its names taken and counted too)."""

    def __init__(
        self,
        staging: Path,
        web: WebSettings,
        *,
        resolver: Resolver = system_resolver,
        uploaded: Received | None = None,
    ) -> None:
        self.staging = staging
        self.limits = Limits.from_settings(web)
        allow = AllowList.of(web.fetch_hosts, setting="web.fetch_hosts", refusal=FetchNotAllowed)
        self.outgoing = Outgoing(allow, web.fetch_timeout, resolver)
        self.deadline_s = web.fetch_deadline
        self._deadline = time.monotonic() + web.fetch_deadline
        self.stored: list[str] = []
        files = [*uploaded.audio, *uploaded.videos] if uploaded is not None else []
        self._uploaded = len(files)
        self._used: set[str] = {name.casefold() for name in files}
        self._total = uploaded.stored_bytes if uploaded is not None else 0

    def check(self, url: str, field: str) -> None:
        """Before anything is downloaded: ``url`` is an http(s) URL on an allowed host (no DNS yet)."""
        try:
            self.outgoing.check(url)
        except ValueError as exc:
            raise BadUpload(f"{field} {exc}", hint="Give an http:// or https:// URL.") from None

    def fetch(self, url: str, role: Role, field: str) -> str:
        """Download ``url`` (``field`` names it in messages: ``audio_url``, ``video_urls[2]``) into the staging
        folder as the audio or a presenter; returns the stored file name."""
        self.check(url, field)
        if self._uploaded + len(self.stored) + 1 > self.limits.max_files:
            raise TooLarge(f"more than {self.limits.max_files} files in one job (the audio included)")
        host = host_of(parse_url(url))
        self._in_time(field, host)
        try:
            left = self._deadline - time.monotonic()
            with self.outgoing.open("GET", url, max_redirects=MAX_REDIRECTS, deadline=left) as answer:
                if not 200 <= answer.status_code < 300:
                    raise FetchFailed(f"{field} (from {host}): answered {answer.status_code} {answer.reason_phrase}")
                name = self._name(answer, role, field, host)
                self._receive(answer, name, field, host)
        except SendFailed as exc:
            self._in_time(field, host)
            where = host if exc.host == host else f"{host}, redirected to {exc.host}"
            raise FetchFailed(f"{field} (from {where}): {exc.reason}") from None
        self.stored.append(name)
        return name

    def _name(self, answer: httpx.Response, role: Role, field: str, host: str) -> str:
        accepted = AUDIO_UPLOADS if role == "audio" else PRESENTER_UPLOADS
        raw = _disposition_name(answer.headers.get("content-disposition")) or unquote(answer.request.url.path)
        base = safe_basename(raw)
        kind = answer.headers.get("content-type", "").partition(";")[0].strip().casefold()
        what = "an audio file or a video" if role == "audio" else "a video or a still photo"
        hint = f"The audio is the speech: {AUDIO_KINDS}." if role == "audio" else PRESENTER_HINT
        if kind.startswith("text/"):
            raise BadUpload(f"{field} (from {host}) answered a page ({kind}), not {what}", hint=hint)
        if base and Path(base).suffix.casefold() in accepted:
            chosen = base
        elif CONTENT_TYPES.get(kind) in accepted:
            chosen = f"{Path(base).stem or role}{CONTENT_TYPES[kind]}"
        else:
            named = f"named {base!r}" if base else "without a file name"
            problem = f"{field} (from {host}) is not {what}: it is {named}, of type {kind or 'unknown'}"
            raise BadUpload(problem, hint=hint)
        return unique_name(chosen, self._used)

    def _receive(self, answer: httpx.Response, name: str, field: str, host: str) -> None:
        """Stream the answer's body into ``staging/name``, within the limits; the file is removed on any failure."""
        max_file = self.limits.max_file_bytes
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_file:
            raise self._too_large(field, host)
        path = self.staging / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(name) from None
            raise
        try:
            with os.fdopen(fd, "wb") as out:
                self._copy(answer, out, name, field, host)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _copy(self, answer: httpx.Response, out: BinaryIO, name: str, field: str, host: str) -> None:
        size = 0
        try:
            for chunk in answer.iter_bytes():
                self._in_time(field, host)
                size += len(chunk)
                if size > self.limits.max_file_bytes:
                    raise self._too_large(field, host)
                if self._total + size > self.limits.max_total_bytes:
                    raise TooLarge(
                        f"{field} (from {host}) takes the job's files past web.max_total_mb = "
                        f"{self.limits.max_total_bytes / MiB:g} MiB"
                    )
                out.write(chunk)
            self._in_time(field, host)  # a body without a length that the deadline cut short ends like a whole one
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(name) from None
            raise
        self._total += size

    def _in_time(self, field: str, host: str) -> None:
        """FetchFailed once the job's downloads have taken ``web.fetch_deadline``."""
        if time.monotonic() > self._deadline:
            raise FetchFailed(
                f"{field} (from {host}): the job's downloads took longer than web.fetch_deadline = "
                f"{self.deadline_s:g} s",
                hint="Give URLs on a server that sends faster, or upload the files themselves.",
            )

    def _too_large(self, field: str, host: str) -> TooLarge:
        return TooLarge(
            f"{field} (from {host}) is larger than web.max_file_mb = {self.limits.max_file_bytes / MiB:g} MiB"
        )
