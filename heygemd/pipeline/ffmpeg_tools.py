"""Finding ffmpeg/ffprobe and running them as well-behaved child processes (their command lines: ``ffmpeg_argv``).

Every child is started with an argv list (never a shell string) in its own session
(``start_new_session=True``), so a Ctrl-C or SIGTERM sent to the daemon's process group does not
kill an encoder mid-write before heygemd has cleaned up; heygemd kills and reaps its children itself.
stderr is drained by a small thread into a bounded tail, so a chatty ffmpeg can never block on a
full pipe and error messages can quote the last lines.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from heygemd.errors import DecodeError, DiskFull, EncodeError, NotMedia, ToolMissing
from heygemd.fsutil import InputFile

TAIL_LINES = 25
"""How many of ffmpeg's last stderr lines an error message quotes."""

_INSTALL_HINT = "Install ffmpeg (it provides ffprobe too): sudo apt-get install ffmpeg, then restart heygemd."


def find_tool(name: str) -> str:
    """The absolute path of the executable ``name`` (e.g. "ffmpeg", "ffprobe") on PATH.

    Raises ToolMissing with an install hint when it is not there.
    """
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} was not found on PATH ({os.environ.get('PATH', '')})", hint=_INSTALL_HINT)
    return found


@contextmanager
def open_input(source: Path | InputFile) -> Iterator[InputFile]:
    """``source`` as an open input: an :class:`InputFile` as it is (its owner closes it), a path opened now
    (``InputFile.open``: never through a link, never a FIFO or device) for this use and closed after it.

    A child started meanwhile with ``pass_fds=input.pass_fds`` keeps reading the file however long it runs.
    A missing file is NotMedia naming it.
    """
    if isinstance(source, InputFile):
        yield source
        return
    try:
        opened = InputFile.open(Path(source))
    except FileNotFoundError:
        raise NotMedia(
            "no such file",
            path=source,
            hint="Check the file's name and folder: there is no file (or no longer one) under that name.",
        ) from None
    with opened:
        yield opened


def stderr_text(lines: Sequence[str]) -> str:
    """Joined stderr lines for an error message, or a note that ffmpeg said nothing."""
    text = "\n".join(line for line in lines if line.strip())
    return text if text else "(ffmpeg printed no error message)"


def is_disk_full(text: str) -> bool:
    """Whether ffmpeg's stderr reports that the output filesystem is full."""
    lowered = text.lower()
    return "no space left on device" in lowered or "disk quota exceeded" in lowered


def disk_error(exc: OSError, path: Path, doing: str) -> Exception:
    """The error for an OSError while writing under ``path``: DiskFull when the disk is full, else EncodeError."""
    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return DiskFull(f"no space left while {doing}", path=path)
    return EncodeError(f"{doing} failed: {exc}", path=path)


class StderrTail:
    """Drains a child's stderr on a daemon thread, keeping only the last ``TAIL_LINES`` lines."""

    def __init__(self, stream: IO[bytes], max_lines: int = TAIL_LINES):
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with self._stream:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                with self._lock:
                    self._lines.append(line)

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the child closed stderr (it has exited) so the tail is complete."""
        self._thread.join(timeout)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def text(self) -> str:
        return stderr_text(self.lines())


class ToolProcess:
    """One running ffmpeg child: its pipes, its stderr tail, and kill/reap that are safe to repeat.

    ``stdin``/``stdout`` are the Popen pipes (None unless requested). The child runs in its own
    session; ``kill()`` sends SIGKILL if it is still running and always reaps it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdin: bool = False,
        stdout: bool = False,
        stdout_fd: int | None = None,
        pass_fds: Sequence[int] = (),
    ):
        """``stdout_fd``: an open file the child writes its stdout to (instead of a pipe or nothing);
        ``pass_fds``: descriptors the child inherits (it can read them as ``/proc/self/fd/N``)."""
        self.argv = list(argv)
        out: int = stdout_fd if stdout_fd is not None else subprocess.PIPE if stdout else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        assert self.proc.stderr is not None
        self._tail = StderrTail(self.proc.stderr)

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None, "started without stdin=True"
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None, "started without stdout=True"
        return self.proc.stdout

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit (raises subprocess.TimeoutExpired) and return its exit status."""
        code = self.proc.wait(timeout)
        self._tail.join()
        return code

    def kill(self) -> None:
        """SIGKILL the child if it still runs, close our pipe ends, reap it. Idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass  # closing flushes stdin; the child is gone, so its reader end is too
        self.proc.wait()
        self._tail.join()

    def stderr_tail(self) -> str:
        """ffmpeg's last stderr lines (complete once the child has exited)."""
        return self._tail.text()


def run_probe(
    argv: Sequence[str], path: Path, timeout: float = 120.0, *, pass_fds: Sequence[int] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run a short-lived tool (ffprobe, ``ffmpeg -filters``) to completion in its own session.

    Raises DecodeError naming ``path`` when it does not finish within ``timeout`` seconds (a hung
    network mount, say); the child is killed and reaped in that case. ``pass_fds``: descriptors the child
    inherits (an :class:`InputFile` it reads).
    """
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired:
        raise DecodeError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s", path=path) from None
