"""Per-step audio features kept out of the process's memory: rows appended to an unlinked temporary file and read
back by range with ``os.pread``.

The Whisper engines (MuseTalk, LatentSync) encode a recording once per job, 30 s at a time, and each render batch
needs only the few steps its frames' windows cover. Held in memory the states of a long lesson would grow the
process by ~23 MB per minute of audio; a memory map of the file counted every page written into it in the RSS
(bench/README.md, "Memory: MuseTalk's scaling"). Here they cost disk and page cache instead, and the file
disappears with its last handle, even after SIGKILL.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

import numpy as np


class StepStore:
    """float32 rows of one shape (e.g. (5, 384): Whisper's five states of one step), appended in order."""

    def __init__(self, row_shape: tuple[int, ...], prefix: str):
        self.row_shape = tuple(row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * 4
        self.rows = 0
        """Rows written so far."""
        self._file: IO[bytes] | None = tempfile.TemporaryFile(prefix=prefix)

    def append(self, rows: np.ndarray) -> None:
        """Append float32 (n, *row_shape) ``rows``."""
        data = np.ascontiguousarray(rows, dtype=np.float32)
        if data.shape[1:] != self.row_shape:
            raise ValueError(f"rows must be (n, {', '.join(map(str, self.row_shape))}), got {data.shape}")
        handle = self._handle()
        handle.write(data.data)
        handle.flush()  # read() takes the file descriptor, below the buffer
        self.rows += len(data)

    def read(self, first: int, stop: int) -> np.ndarray:
        """float32 (stop - first, *row_shape): the rows ``first..stop-1`` (all written)."""
        if not 0 <= first <= stop <= self.rows:
            raise ValueError(f"rows {first}..{stop} outside the {self.rows} stored")
        size = (stop - first) * self.row_bytes
        data = os.pread(self._handle().fileno(), size, first * self.row_bytes)
        if len(data) != size:
            raise RuntimeError(f"feature file: read {len(data)} of {size} bytes")
        return np.frombuffer(data, dtype=np.float32).reshape(stop - first, *self.row_shape)

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _handle(self) -> IO[bytes]:
        if self._file is None:
            raise RuntimeError("audio features used after close()")
        return self._file
