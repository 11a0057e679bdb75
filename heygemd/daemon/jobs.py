"""A job folder -> :class:`JobSpec`: which file is the audio, which are the presenter videos/images, and the
options from an optional ``job.toml``.

A job folder holds one speech audio, one or more videos or still images, and optionally ``job.toml``::

    engine = "mouthwarp"        # auto, or an engine of heygemd.engine_names
    latentsync_steps = 10       # engine latentsync: denoising steps (engine.latentsync_steps)
    latentsync_guidance = 2.0   # engine latentsync: guidance scale (engine.latentsync_guidance)
    naming = "{stem}_synced.mp4"
    loop_mode = "loop"          # pingpong | loop
    crf = 20                    # 0..51, lower is better
    audio = "voice take 2.wav"  # required when the folder holds several audio files; may name a video (its sound)
    gpu_class = "a100"          # a farm: only workers with [queue] gpu_class = "a100" take it
    priority = "high"           # high | normal | low | 0..9: the intake takes the highest first
    presenters = ["anna", "bob"]  # presenters of the library (daemon.library), or "all"; the folder may then hold
                                # only its audio
    callback_url = "https://n8n.example.com/webhook-waiting/123"  # POSTed status.json when the job ends

Every option left out means "use the daemon's setting". Only the folder's own files are used; junk and
in-flight names (see :func:`heygemd.names.classify_name`) and the ready marker are skipped
silently; symbolic links are never followed: a linked job.toml or audio fails the job and a linked video fails
that video with UNSAFE_PATH (:func:`check_not_link`), a link to a folder is listed as ignored; a job.toml that is
not a regular file (a FIFO, a device) or is larger than ``[intake] max_job_toml_kb`` fails the job unread
(NOT_A_FILE, FILE_TOO_LARGE); everything else
that is not used (other files, sub-folders, audio files not chosen) is listed in
``JobSpec.ignored`` so status.json can show it. Problems raise :class:`~heygemd.errors.JobError` whose
message names the file (and the job.toml field) and whose hint says what to change.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from heygemd.daemon.priority import Priority
from heygemd.engine_names import EngineName, listed
from heygemd.errors import HeygemdError, JobError, UnsafePath
from heygemd.fsutil import is_real_file, read_regular
from heygemd.names import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    NameKind,
    classify_name,
    encodable_name,
    is_audio,
    is_presenter,
    plain_name,
    shown_name,
)
from heygemd.outgoing import parse_url
from heygemd.settings import GPU_CLASS_PATTERN, EngineSettings, IntakeSettings, LoopMode, check_naming

JOB_TOML = "job.toml"
MAX_URL_LENGTH = 2048
"""Longest URL a job names (``callback_url``; the web's URL inputs too)."""
MAX_JOB_TOML_BYTES = IntakeSettings().max_job_toml_bytes
"""``[intake] max_job_toml_kb``'s default, for callers without settings."""
MAX_PRESENTERS = 1000
"""Most presenters one job.toml may name."""


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``clip2`` before ``clip10`` and ignores case."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts if part)


class JobOptions(BaseModel):
    """The options of ``job.toml``; None means "use the daemon's setting"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineName | None = Field(None, description=f"The lip-sync engine: {listed()}.")
    naming: str | None = Field(None, description="Output file name; {stem} is the input's name without suffix.")
    loop_mode: LoopMode | None = Field(None, description="pingpong or loop, when the audio is longer than a video.")
    crf: int | None = Field(None, ge=0, le=51, description="H.264 quality, 0..51 (lower is better and larger).")
    audio: str | None = Field(None, description="File name of the audio, when the folder holds several.")
    gpu_class: str | None = Field(
        None, pattern=GPU_CLASS_PATTERN, description="A farm: only workers of this [queue] gpu_class take the job."
    )
    priority: Priority | None = Field(
        None, description="high, normal (the default), low or 0..9: waiting jobs start highest first, then oldest."
    )
    # Options named as an [engine] setting override it for the job (engine_settings); same bounds as the setting.
    latentsync_steps: int | None = Field(
        None, ge=1, description="LatentSync: denoising steps per window (more: finer, slower; the reference's 20)."
    )
    latentsync_guidance: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="LatentSync: guidance scale (above 1 each step runs twice; higher follows the audio more "
        "closely and may distort; the reference's 1.5).",
    )
    callback_url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="An http(s) URL the job's status.json is POSTed to, signed, when the job ends (done, partial, "
        "failed or cancelled); its host must be among the server's [notify] callback_hosts.",
    )
    presenters: list[Annotated[str, Field(min_length=1, max_length=255)]] | Literal["all"] | None = Field(
        None,
        max_length=MAX_PRESENTERS,
        description='Presenters of the library to render besides the folder\'s own videos: their names, or "all".',
    )

    @field_validator("presenters", mode="before")
    @classmethod
    def _one_presenter(cls, value: object) -> object:
        return [value] if isinstance(value, str) and value != "all" else value

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str | None) -> str | None:
        return None if value is None else check_naming(value)

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_url(value)
            except ValueError as exc:
                raise ValueError(f"the URL {exc}") from None
        return value

    def engine_settings(self) -> dict[str, object]:
        """The options set here that override an ``[engine]`` setting of the same name, for this job."""
        chosen = {name: getattr(self, name) for name in type(self).model_fields if name in EngineSettings.model_fields}
        return {name: value for name, value in chosen.items() if value is not None}


class JobSpec(BaseModel):
    """A validated job: its id and name, the folder, the audio, the presenter inputs (videos and still
    images, sorted by name), the names not used (``ignored``), and the job.toml options."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    name: str
    folder: Path
    audio: Path
    videos: list[Path]
    ignored: list[str] = Field(default_factory=list)
    options: JobOptions = JobOptions()


def job_toml(options: BaseModel) -> str:
    """job.toml text (or a library presenter's toml) for the options that are set. JSON's scalars and arrays are
    TOML's: a string is written as a basic string with every quote, backslash and control character escaped, so no
    value can add a line or another option."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.model_dump(exclude_none=True).items())


def _toml_problem(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"field '{field}': {msg}")
    return "; ".join(parts)


def check_not_link(path: Path, folder: Path) -> None:
    """Raise UnsafePath when ``path`` (a file of the job ``folder``) is a symbolic link, naming where it points."""
    if path.is_symlink():
        raise UnsafePath(f"is a symbolic link to {os.readlink(path)}; it is not followed", path=path)


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, with a document nested too deeply for Python's parser (which recurses once per
    level: 20,000 ``[`` fit in a job.toml's 64 KiB) raised as invalid TOML, as any other bad document is."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("nested too deeply (arrays or tables inside each other)") from None


def load_options(path: Path, *, max_bytes: int = MAX_JOB_TOML_BYTES) -> JobOptions:
    """Read and validate ``job.toml``; JobError names the file, the field and the problem. It is read by
    :func:`heygemd.fsutil.read_regular`: a link (UnsafePath), a FIFO or a device (NotRegularFile) is refused without
    waiting for it, one over ``max_bytes`` (FileTooLarge) without reading it."""
    hint = (
        f"Fix {path.name}: allowed options are {', '.join(JobOptions.model_fields)}; "
        'values are TOML, e.g. crf = 20, engine = "mouthwarp". Leave an option out to use the daemon setting.'
    )
    try:
        data = parse_toml(read_regular(path, max_bytes=max_bytes).decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise JobError(f"not UTF-8 text ({exc.reason})", path=path, hint=hint) from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"not valid TOML: {exc}", path=path, hint=hint) from None
    try:
        return JobOptions.model_validate(data)
    except ValidationError as exc:
        raise JobError(_toml_problem(exc), path=path, hint=hint) from None


def asked_priority(folder: Path, *, max_toml_bytes: int = MAX_JOB_TOML_BYTES) -> int | None:
    """The ``priority`` of the job folder's job.toml, for ordering waiting jobs; None when it sets none, or it
    cannot be read (the job then fails with that error when it runs, not here)."""
    try:
        names = [name for name in os.listdir(folder) if name.casefold() == JOB_TOML]
        return load_options(Path(folder) / names[0], max_bytes=max_toml_bytes).priority if names else None
    except (OSError, HeygemdError):
        return None


def load_job(
    folder: Path,
    *,
    job_id: str | None = None,
    name: str | None = None,
    ready_marker: str = ".ready",
    max_toml_bytes: int = MAX_JOB_TOML_BYTES,
) -> JobSpec:
    """Read a job folder. ``job_id``/``name`` default to the folder's name (pass the claim's for a claimed job:
    its folder is ``.../claimed/<id>/input``); ``max_toml_bytes``: ``[intake] max_job_toml_kb``."""
    folder = Path(folder)
    name = name if name is not None else folder.name
    job_id = job_id if job_id is not None else name

    audios: list[Path] = []
    videos: list[Path] = []
    ignored: list[str] = []
    toml_path: Path | None = None
    for entry in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        # bytes no encoding maps (a copy from an old system): unusable in status.json
        if not encodable_name(entry.name):
            ignored.append(shown_name(entry.name))
            continue
        is_dir = entry.is_dir()
        if entry.name == ready_marker or classify_name(entry.name, is_dir=is_dir) is not NameKind.NORMAL:
            continue
        if is_dir:
            ignored.append(entry.name + "/")
        elif entry.name.casefold() == JOB_TOML:
            toml_path = entry
        elif is_audio(entry):
            audios.append(entry)
        elif is_presenter(entry):
            videos.append(entry)
        else:
            ignored.append(entry.name)

    options = load_options(toml_path, max_bytes=max_toml_bytes) if toml_path is not None else JobOptions()
    audio = _pick_audio(folder, audios, videos, options, toml_path)
    check_not_link(audio, folder)
    ignored.extend(a.name for a in audios if a != audio)
    videos = [v for v in videos if v != audio]  # a video named as the audio gives its sound track, not a presenter
    if not videos and not options.presenters:  # presenters of the library are linked in when the job is claimed
        raise JobError(
            "no presenter video or image in the job folder",
            path=folder,
            hint="Add one or more videos ("
            + ", ".join(sorted(e[1:] for e in VIDEO_SUFFIXES))
            + ") or images ("
            + ", ".join(sorted(e[1:] for e in IMAGE_SUFFIXES))
            + f'), or name presenters of the library in {JOB_TOML}: presenters = ["anna", "bob"].',
        )
    return JobSpec(
        job_id=job_id,
        name=name,
        folder=folder,
        audio=audio,
        videos=videos,
        ignored=sorted(ignored, key=natural_key),
        options=options,
    )


def _pick_audio(
    folder: Path, audios: list[Path], videos: list[Path], options: JobOptions, toml_path: Path | None
) -> Path:
    """The job's audio: the one audio file, or the file job.toml's ``audio`` names: an audio file, or a video
    whose sound track is used (it is then not a presenter)."""
    listed = ", ".join(f'"{a.name}"' for a in audios)
    if options.audio is not None:
        wanted = options.audio
        candidates = [*audios, *(v for v in videos if v.suffix.casefold() in VIDEO_SUFFIXES)]
        exact = [a for a in candidates if a.name == wanted]
        loose = [a for a in candidates if a.name.casefold() == wanted.casefold()]
        if exact or len(loose) == 1:
            return (exact or loose)[0]
        raise JobError(
            f"{JOB_TOML}: field 'audio': \"{wanted}\" is not an audio file or a video in the job folder"
            + (f" (audio files: {listed})" if audios else ""),
            path=toml_path or folder,
            hint="Set audio to the exact name of an audio file, or of a video whose sound track is the speech, e.g. "
            'audio = "voice.wav".',
        )
    if not audios:
        raise JobError(
            "no audio file in the job folder",
            path=folder,
            hint="Add the speech audio (" + ", ".join(sorted(e[1:] for e in AUDIO_SUFFIXES)) + ").",
        )
    if len(audios) > 1:
        raise JobError(
            f"several audio files in the job folder: {listed}",
            path=folder,
            hint=f'Keep one, or say which to use in {JOB_TOML}: audio = "{audios[0].name}"',
        )
    return audios[0]


def listed_inputs(folder: Path) -> tuple[str | None, list[str]]:
    """What a job folder holds by the names alone, for a job that is not complete yet or cannot be read as a job
    (:func:`load_job` failed): its first audio file (None when there is none) and its presenters, in the order
    the job would take them. Only plain regular files count; an unreadable folder holds nothing."""
    try:
        names = sorted(os.listdir(folder), key=natural_key)
    except OSError:
        return None, []
    audio: str | None = None
    presenters: list[str] = []
    for name in names:
        if not plain_name(name) or not is_real_file(Path(folder) / name):
            continue
        if is_audio(Path(name)) and audio is None:
            audio = name
        elif is_presenter(Path(name)):
            presenters.append(name)
    return audio, presenters
