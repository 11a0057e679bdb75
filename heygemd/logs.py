"""Logging: structlog configured once at start, for one sink, plus per-job ``job.log`` files.

Library code only asks for a logger and binds context::

    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(job_id="lesson-01"), job_log(outbox / "lesson-01" / "job.log"):
        log.info("video.done", video="a.mp4", seconds=3.2)

The entry point calls :func:`configure_logging` once. Sinks:

``journald``
    Native journal protocol through systemd-python: ``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER=heygemd``,
    ``EVENT`` (the event name), ``MESSAGE_ID`` for the state transitions in :data:`MESSAGE_IDS`,
    ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``, ``TID``, and every other key upper-cased (``job_id`` -> ``JOB_ID``),
    so ``journalctl -u heygemd JOB_ID=lesson-01`` finds a job's events.
``json``
    One JSON object per line on stderr.
``console``
    structlog's ConsoleRenderer, for a terminal.

``auto`` picks journald when stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr's device and
inode), console on a TTY, else JSON. An explicit or detected ``journald`` falls back to JSON (with a
``logging.journald_unavailable`` warning as the first line) when the journal socket is missing or systemd-python
is not installed: a daemon whose logs go to stderr is better than one that refuses to start, and under systemd
stderr still reaches the journal as plain text.

The only state lives in structlog's own configuration and in a :class:`~contextvars.ContextVar` naming the
``job.log`` of the current context (like structlog's own bound context variables).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import os
import re
import socket
import sys
import threading
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import CallsiteParameter
from structlog.typing import EventDict, Processor, WrappedLogger

from heygemd.settings import LoggingSettings

SinkName = Literal["journald", "json", "console"]

SYSLOG_IDENTIFIER = "heygemd"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

#: syslog priorities of the log levels (structlog's level names).
PRIORITIES: Mapping[str, int] = MappingProxyType({"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2})

#: Stable journal MESSAGE_IDs of the important state transitions, by event name. Query one kind of event
#: across jobs with ``journalctl -u heygemd MESSAGE_ID=<hex>``. Never change a value; add new ones with
#: ``python -c 'import uuid; print(uuid.uuid4().hex)'``. A ``message_id=`` key on an event overrides this.
MESSAGE_IDS: Mapping[str, uuid.UUID] = MappingProxyType(
    {
        "daemon.ready": uuid.UUID("9da206c70a9a4ec5855396fe3f8e34c9"),
        "daemon.stopping": uuid.UUID("9d9b54e9d9784cca816449019ea1fcaf"),
        "job.claimed": uuid.UUID("fddb0040d4e44b17a3aa6922935b2f05"),
        "job.started": uuid.UUID("7855efc0e15140b6916fa3c885105af3"),
        "job.done": uuid.UUID("167111fde811424ab7a2ad1c163bbde2"),
        "job.partial": uuid.UUID("21bca5f2cf334f5785e10b98d32197e7"),
        "job.failed": uuid.UUID("b52d6bd9fcfb49558c9d31e730ba05de"),
        "video.done": uuid.UUID("37d630fe972d47f3a5d6f2d375491583"),
        "video.failed": uuid.UUID("c6ae7ba26da84da1955e4b2b53916085"),
        "job.cancel_requested": uuid.UUID("581069649c9c4de48a1b0de8a2ad6bed"),
        "job.cancelled": uuid.UUID("1c6e03526e864fc09caa8101316e638a"),
    }
)

# Keys of the event dict that the journald renderer turns into fields of its own.
_CALLSITE = {"pathname": "CODE_FILE", "lineno": "CODE_LINE", "func_name": "CODE_FUNC"}
_CONSUMED = {"event", "level", "timestamp", "exception", "exc_info", "message_id", *_CALLSITE}


def configure_logging(settings: LoggingSettings, *, stream: TextIO | None = None) -> SinkName:
    """Configure structlog for the sink chosen by ``settings.format``; return the sink's name.

    ``stream`` (default: ``sys.stderr`` at call time) is where the JSON and console sinks write and whose file
    descriptor ``auto`` compares with ``$JOURNAL_STREAM``. Call it once, at start; calling it again replaces
    the configuration (tests do that).
    """
    stream = sys.stderr if stream is None else stream
    sink = select_sink(settings.format, stream)
    problem = journal_problem() if sink == "journald" else None
    if problem is not None:
        sink = "json"
    structlog.configure(
        processors=[*_shared_processors(), *_sink_processors(sink, stream)],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=_logger_factory(sink, stream),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _log_warning  # a library's warning is one event like ours, never a plain-text line
    if problem is not None:
        structlog.get_logger().warning("logging.journald_unavailable", reason=problem, fallback="json")
    return sink


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` while heygemd logs: the warning (shown once per place, as Python's default filter
    says) becomes a ``python.warning`` event in the configured sink, so the journal and JSON lines stay parseable."""
    structlog.get_logger("heygemd").warning(
        "python.warning", category=category.__name__, warning=str(message), where=f"{filename}:{lineno}"
    )


def select_sink(requested: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> SinkName:
    """Resolve ``auto`` by where ``stream`` goes: the journal, a terminal, or anything else (JSON)."""
    if requested in ("journald", "json", "console"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"unknown log format {requested!r}")
    if connected_to_journal(stream, environ):
        return "journald"
    return "console" if _isatty(stream) else "json"


def connected_to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` ("dev:ino", set by systemd) names the file behind ``stream``.

    A plain "is it set" check is wrong in a terminal that inherited the variable from a service.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        expected = (int(device), int(inode))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # malformed variable, or a stream without a file descriptor
        return False
    return (info.st_dev, info.st_ino) == expected


def journal_problem(socket_path: Path = JOURNAL_SOCKET) -> str | None:
    """Why native journal logging cannot work here, or None when it can.

    Checked at start because libsystemd silently drops messages when the socket does not exist.
    """
    try:
        importlib.import_module("systemd.journal")  # optional dependency: the "journald" extra
    except ImportError:
        return "systemd-python is not installed (pip install 'heygemd[journald]')"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(socket_path))
        except OSError as exc:
            return f"{socket_path}: {exc.strerror or exc}"
    return None


def journal_field_name(key: str) -> str:
    """A valid journal field name for an event key: upper case, ``[A-Z0-9_]``, no leading ``_`` or digit.

    Journald silently drops fields with other names (lower case ones included; python-systemd#69), and names
    starting with ``_`` are reserved for trusted fields.
    """
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = f"F_{name}"
    return name[:64]


# --- processors ---------------------------------------------------------------------------------------------


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        write_job_log,
    ]


def _sink_processors(sink: SinkName, stream: TextIO) -> list[Processor]:
    if sink == "journald":
        callsite = [CallsiteParameter.PATHNAME, CallsiteParameter.LINENO, CallsiteParameter.FUNC_NAME]
        return [
            structlog.processors.CallsiteParameterAdder(callsite),
            structlog.processors.format_exc_info,
            JournaldRenderer(),
        ]
    if sink == "console":
        return [structlog.dev.ConsoleRenderer(colors=_isatty(stream))]
    return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str)]


def _logger_factory(sink: SinkName, stream: TextIO) -> Callable[..., WrappedLogger]:
    if sink == "journald":
        from systemd import journal

        logger = JournaldLogger(journal.sendv, fallback=stream)
        return lambda *args: logger
    return structlog.WriteLoggerFactory(file=stream)


class JournaldRenderer:
    """Last processor of the journald chain: turns an event dict into journal fields (name -> value).

    structlog passes the returned dict as keyword arguments to :class:`JournaldLogger`.
    """

    def __init__(self, identifier: str = SYSLOG_IDENTIFIER) -> None:
        self._identifier = identifier

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> dict[str, str]:
        event = str(event_dict.get("event", ""))
        level = event_dict.get("level", method_name)
        message = format_event(event, _extra(event_dict))
        if event_dict.get("exception"):
            message = f"{message}\n{event_dict['exception']}"
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(PRIORITIES.get(level, PRIORITIES["info"])),
            "SYSLOG_IDENTIFIER": self._identifier,
            "EVENT": event,
            "TID": str(threading.get_native_id()),
        }
        message_id = event_dict.get("message_id") or MESSAGE_IDS.get(event)
        if message_id is not None:
            fields["MESSAGE_ID"] = getattr(message_id, "hex", str(message_id))
        for key, name in _CALLSITE.items():
            if event_dict.get(key) is not None:
                fields[name] = str(event_dict[key])
        for key, value in _extra(event_dict).items():
            name = journal_field_name(key)
            fields[f"F_{name}" if name in fields else name] = str(value)
        return fields


class JournaldLogger:
    """Sends one journal entry per call through ``sendv`` (``systemd.journal.sendv``).

    When the journal refuses an entry (journald stopped, socket buffer full) the entry is written as a JSON
    line to ``fallback`` with the error, so it is never lost silently and logging never crashes the daemon.
    """

    def __init__(self, sendv: Callable[..., Any], *, fallback: TextIO) -> None:
        self._sendv = sendv
        self._fallback = fallback

    def msg(self, **fields: str) -> None:
        """Send ``fields`` (journal field name -> value) as one entry."""
        try:
            self._sendv(*(f"{name}={value}" for name, value in fields.items()))
        except OSError as exc:
            line = json.dumps({**fields, "JOURNAL_ERROR": str(exc)}, ensure_ascii=False)
            self._fallback.write(line + "\n")
            self._fallback.flush()

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def format_event(event: str, values: Mapping[str, Any]) -> str:
    """``event key=value key="with space"``: one readable line (newlines in values are escaped)."""
    return " ".join([event, *(f"{key}={_plain(value)}" for key, value in values.items())])


def _extra(event_dict: EventDict) -> dict[str, Any]:
    return {k: v for k, v in event_dict.items() if k not in _CONSUMED and v is not None}


def _plain(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# --- per-job job.log ----------------------------------------------------------------------------------------


class _JobLogFile:
    """An open job.log: appends one readable line per event, flushed per line, from any thread."""

    def __init__(self, path: Path, job_id: str | None) -> None:
        self.path = path
        self.job_id = job_id
        self._lock = threading.Lock()
        self._file: TextIO | None = path.open("a", encoding="utf-8", buffering=1)

    def write(self, event_dict: EventDict) -> None:
        event_job = event_dict.get("job_id")
        if self.job_id is not None and event_job is not None and str(event_job) != self.job_id:
            return
        values = {k: v for k, v in _extra(event_dict).items() if not (k == "job_id" and str(v) == self.job_id)}
        line = f"{event_dict.get('timestamp', '')} {event_dict.get('level', ''):<8} " + format_event(
            str(event_dict.get("event", "")), values
        )
        trace = _exception_text(event_dict.get("exc_info")) or event_dict.get("exception")
        if trace:
            line += "\n" + "".join(f"    {row}\n" for row in str(trace).rstrip("\n").splitlines()).rstrip("\n")
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line + "\n")
                return
            except OSError as exc:
                error = exc
                broken, self._file = self._file, None  # stop writing (disk full, share gone); report once, below
        with contextlib.suppress(OSError):  # its buffer cannot be flushed either; release the descriptor
            broken.close()
        # Outside the lock: this event passes through write_job_log again and finds the file closed.
        structlog.get_logger().warning("job_log.write_failed", path=str(self.path), error=str(error))

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()


_ACTIVE_JOB_LOG: contextvars.ContextVar[_JobLogFile | None] = contextvars.ContextVar("heygemd_job_log", default=None)


@contextlib.contextmanager
def job_log(path: Path) -> Iterator[Path]:
    """While active, also append every event logged in this context to ``path`` (``outbox/<job>/job.log``).

    For people who cannot run journalctl: ``<ISO timestamp> <level> <event> key=value ...``, one line per event
    (tracebacks indented below it), flushed per line, whatever the main sink is. Routing follows the context:
    events from this thread, or from threads started with ``contextvars.copy_context().run``, land here;
    other jobs' contexts do not. When ``job_id`` is bound (structlog.contextvars) on entry, events carrying a
    different ``job_id`` are left out too. Needs :func:`configure_logging` to have run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    job_id = structlog.contextvars.get_contextvars().get("job_id")
    sink = _JobLogFile(path, None if job_id is None else str(job_id))
    token = _ACTIVE_JOB_LOG.set(sink)
    try:
        yield path
    finally:
        _ACTIVE_JOB_LOG.reset(token)
        sink.close()


def write_job_log(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: copy the event to the current context's job.log, if any; the event dict passes unchanged."""
    sink = _ACTIVE_JOB_LOG.get()
    if sink is not None:
        sink.write(event_dict)
    return event_dict


def _exception_text(exc_info: Any) -> str:
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return ""
    return "".join(traceback.format_exception(*exc_info))


__all__ = [
    "JOURNAL_SOCKET",
    "MESSAGE_IDS",
    "PRIORITIES",
    "SYSLOG_IDENTIFIER",
    "JournaldLogger",
    "JournaldRenderer",
    "SinkName",
    "configure_logging",
    "connected_to_journal",
    "format_event",
    "job_log",
    "journal_field_name",
    "journal_problem",
    "select_sink",
    "write_job_log",
]
