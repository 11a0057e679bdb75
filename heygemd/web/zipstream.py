"""A ZIP of a job's files, produced chunk by chunk while it is sent: never built in memory or on disk.

Entries are stored (videos and JPEGs do not compress) with data descriptors, as zipfile writes to a stream it
cannot seek; every unzip tool reads that.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from heygemd.errors import HeygemdError
from heygemd.fsutil import open_regular

CHUNK = 1024 * 1024


class _Sink(io.RawIOBase):
    """A write-only stream that hands back what was written since the last ``take``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def stream_zip(files: Iterable[Path]) -> Iterator[bytes]:
    """Yield the bytes of a ZIP holding ``files`` (by their names) as it is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in files:
            try:  # listed as a regular file; opened once, so a link or FIFO swapped in since is left out
                src = os.fdopen(open_regular(path), "rb")
            except (FileNotFoundError, HeygemdError):
                continue
            with src:
                st = os.fstat(src.fileno())
                info = zipfile.ZipInfo(path.name, date_time=time.localtime(st.st_mtime)[:6])
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=st.st_size >= zipfile.ZIP64_LIMIT // 2) as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        if out := sink.take():
                            yield out
            if out := sink.take():
                yield out
    if out := sink.take():
        yield out
