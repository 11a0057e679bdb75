"""All configuration: one pydantic-settings model.

Sources, strongest first: ``HEYGEMD_*`` environment variables (nested with ``__``, e.g.
``HEYGEMD_PATHS__INBOX``), then the TOML file, then the defaults below. The TOML file is chosen at run
time: ``--config PATH``, else ``$HEYGEMD_CONFIG``, else ``/etc/heygemd/heygemd.toml``, else the repository's
``config/heygemd.toml``. Relative paths are resolved against the directory of that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from heygemd.engine_names import EngineName
from heygemd.errors import ConfigError
from heygemd.hosts import parse_entries
from heygemd.hours import parse_hours
from heygemd.names import output_name, plain_name

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "heygemd.toml"
SYSTEM_CONFIG = Path("/etc/heygemd/heygemd.toml")

LoopMode = Literal["pingpong", "loop"]
FaceChoice = Literal["largest", "left", "right", "centre"]
"""Which face a track follows when several are in view (``[faces] select``, a presenter's ``face``)."""
InputsAfter = Literal["archive", "delete", "keep"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsSettings(Section):
    inbox: Path = Field(Path("../inbox"), description="Watched folder; each sub-folder is one job.")
    outbox: Path = Field(
        Path("../outbox"), description="Results: one folder per job with videos, posters, status.json, job.log."
    )
    models: Path = Field(
        Path("../models"),
        description="Model weights (musetalk/, latentsync/, wav2lip_gan.pth, S3FD, 2DFAN4); never downloaded.",
    )
    state: Path | None = Field(
        None,
        description="Claimed jobs and the input archive. Must be on the inbox's filesystem so claiming is an atomic "
        "rename. Default: <inbox>/.heygemd",
    )
    cache: Path | None = Field(None, description="Face-track cache, keyed by video content. Default: <state>/cache")
    presenters: Path | None = Field(
        None,
        description="The presenter library: one video or photo per presenter (anna.mp4, with an optional anna.toml), "
        "prepared once and named by jobs (job.toml presenters). On the inbox's filesystem, a claim hard-links the "
        "named files into the job; elsewhere it copies them. Default: <models>/presenters",
    )

    @property
    def state_dir(self) -> Path:
        return self.state if self.state is not None else self.inbox / ".heygemd"

    @property
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.state_dir / "cache"

    @property
    def presenters_dir(self) -> Path:
        return self.presenters if self.presenters is not None else self.models / "presenters"


class IntakeSettings(Section):
    settle_seconds: float = Field(
        75.0,
        ge=0,
        description="A job without a .ready marker is ready once nothing in it changed for this long. "
        "Keep it above the NFS attribute-cache time (acregmax, 60 s by default).",
    )
    ready_marker: str = Field(".ready", description="File name that marks a job as completely copied.")
    observer: Literal["auto", "inotify", "polling"] = Field(
        "auto", description="How to watch the inbox; auto polls on NFS/SMB/CIFS mounts and uses inotify elsewhere."
    )
    poll_interval: float = Field(10.0, gt=0, description="Seconds between polls when polling.")
    rescan_interval: float = Field(30.0, gt=0, description="Seconds between full rescans of the inbox (a safety net).")
    incomplete_timeout: float = Field(
        1800.0,
        ge=0,
        description="A settled job (without .ready) whose audio or presenter files still look incomplete (0 "
        "bytes, zero-filled, an MP4/MOV without its index, unreadable by ffprobe, open for writing) is taken anyway "
        "after this long unchanged, and those files fail with their errors. 0 takes them at once.",
    )
    max_job_toml_kb: int = Field(
        64,
        ge=1,
        description="Largest job.toml read, in KiB; a larger one fails its job (FILE_TOO_LARGE), unread, as does "
        "a job.toml that is not a regular file (a FIFO, a device: NOT_A_FILE).",
    )

    hours: tuple[str, ...] = Field(
        (),
        description='Rendering hours, local time: ranges "HH:MM-HH:MM" (one ending before it starts runs past '
        'midnight, e.g. "20:00-07:00"); outside them no job starts (one in progress finishes). Empty: always.',
    )

    @property
    def max_job_toml_bytes(self) -> int:
        return self.max_job_toml_kb * 1024

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_hours(value)


class EngineSettings(Section):
    name: EngineName = Field(
        "auto",
        description="auto: musetalk when models/musetalk/ is complete, else wav2lip when a checkpoint is in "
        "models/, else mouthwarp; latentsync only when named.",
    )
    checkpoint: Path | None = Field(
        None, description="Wav2Lip checkpoint; default: models/wav2lip_gan.pth, then models/wav2lip.pth."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    batch_size: int = Field(
        64,
        ge=1,
        description="Faces per inference pass at most (and frames per render batch, within 32 MiB of frames); "
        "on CUDA the engine starts at what fits in the free GPU memory and halves on out-of-memory. Wav2Lip and "
        "MuseTalk on the CPU take 4 per pass whatever this says.",
    )
    fp16: bool = Field(True, description="Use fp16 autocast on CUDA.")
    cpu_threads: int = Field(
        0,
        ge=0,
        description="Torch threads for CPU inference (wav2lip); 0: the usable cores less a quarter, rounded "
        "down (2 cores: 2, 4: 3, 16: 12), leaving room for the decoding and encoding ffmpeg.",
    )
    compile: bool = Field(
        False, description="Wrap the wav2lip model in torch.compile (slow first batches; the CPU needs a C++ compiler)."
    )
    idle_unload_seconds: float = Field(600.0, ge=0, description="Unload the model after this long without jobs.")
    presenter_cache_gb: float = Field(
        20.0,
        gt=0,
        description="Size limit of the per-presenter preparation cache (VAE latents of every source frame: MuseTalk "
        "about 32 kB per frame, LatentSync 128 kB); the least recently used presenters are evicted.",
    )
    latentsync_steps: int = Field(
        20, ge=1, description="LatentSync: DDIM denoising steps per 16-frame window (the reference's 20)."
    )
    latentsync_guidance: float = Field(
        1.5,
        ge=0,
        allow_inf_nan=False,
        description="LatentSync: classifier-free guidance scale (the reference's 1.5); above 1 each step also runs the "
        "UNet without audio (twice the work); higher follows the audio more closely and may distort or jitter.",
    )
    latentsync_seed: int = Field(
        1247,
        ge=0,
        description="LatentSync: seed of the noise every frame starts from (the reference's 1247), so a render is "
        "reproducible.",
    )
    latentsync_deepcache: bool = Field(
        False,
        description="LatentSync: on 2 of every 3 steps reuse the UNet's deep features from the step before (DeepCache, "
        "as the reference's command line and Gradio app run it): fewer computations, slightly different pictures.",
    )


class FacesSettings(Section):
    detector: Literal["auto", "dlib", "s3fd"] = Field(
        "auto", description="auto: S3FD when its weights are in models/, else dlib (offline, CPU)."
    )
    pads: tuple[int, int, int, int] = Field(
        (0, 10, 0, 0), description="Pixels added to the face box: top, bottom, left, right (bottom covers the chin)."
    )
    smooth_window: int = Field(5, ge=1, description="Frames in the centred window that smooths face boxes.")
    max_gap_frames: int = Field(
        12, ge=0, description="Detection gaps up to this long are interpolated; longer ones pass frames through."
    )
    min_face_ratio: float = Field(
        0.05, ge=0, le=1, description="Fail the video (NO_FACE) when fewer frames than this have a face."
    )
    detect_max_side: int = Field(640, ge=64, description="Frames are downscaled to this longest side for detection.")
    select: FaceChoice = Field(
        "largest",
        description="Which face to follow when several are in view: largest (faces within 80 % of the largest tie, "
        "the one nearest the centre wins), left, right or centre (among faces at least a quarter of the largest's "
        'size). A library presenter\'s toml may choose its own (face = "left").',
    )


class VideoSettings(Section):
    loop_mode: LoopMode = Field(
        "pingpong", description="When the audio is longer than the video: pingpong (forward, backward, ...) or loop."
    )
    still_fps: float = Field(25.0, gt=0, description="Frame rate of outputs made from still images.")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality (lower is better and larger).")
    preset: str = Field("fast", description="x264 preset.")
    audio_bitrate: str = Field("192k", description="AAC bitrate of the output.")
    poster: bool = Field(True, description="Write a poster JPEG next to each output.")
    decoder: Literal["auto", "cpu", "nvdec"] = Field(
        "auto",
        description="auto: NVDEC (-hwaccel cuda) when ffmpeg and a GPU offer it, else the CPU.",
    )
    encoder: Literal["auto", "libx264", "nvenc"] = Field(
        "auto",
        description="auto: NVENC (h264_nvenc, -cq from crf) when ffmpeg and a GPU offer it, else libx264.",
    )
    spool: Literal["x264", "ffv1", "utvideo", "raw"] = Field(
        "x264",
        description="How ping-pong/loop keep decoded frames in the temp folder (all bit exact): x264 (lossless "
        "H.264 of the decoded yuv420p, 7-14 % of the raw frames), ffv1 (lossless, 8-17 %, more CPU than x264), "
        "utvideo (lossless, 11-19 %, least CPU) or raw (no CPU, 100 %).",
    )
    max_presenter_pixels: int = Field(
        40_000_000,
        ge=1,
        le=2**31 - 1,
        description="Largest presenter picture, in pixels (width x height, 8K UHD is 33.2 million): a larger video "
        "or photo fails with PICTURE_TOO_LARGE from its header, before any of it is decoded.",
    )
    max_presenter_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest presenter video, in seconds: a longer one fails with PRESENTER_TOO_LONG from its header, "
        "before any of it is decoded (its face is tracked in every frame, for a job's render as for the library's "
        "preparation, whatever the audio's length).",
    )
    max_audio_seconds: float = Field(
        7200.0,
        gt=0,
        description="Longest audio a job may have, in seconds (every output is as long as its audio): a longer one "
        "fails the job with AUDIO_TOO_LONG, from its header before decoding, or at this length while decoding "
        "when its header understates it.",
    )


class OutboxSettings(Section):
    naming: str = Field(
        "{stem}.mp4",
        description="Output file name: text and {stem} (the input video's name without suffix), nothing else in "
        "braces, ending in an extension; {stem} is cut to keep each name within 255 bytes.",
    )
    inputs_after: InputsAfter = Field(
        "archive", description="What happens to a job's inputs once its outputs are safe."
    )
    archive_retention_days: float = Field(
        30.0, ge=0, description="Archived inputs older than this are removed (0 keeps them forever)."
    )

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        return check_naming(value)


def check_naming(value: str) -> str:
    """An output name template: a file name (not a path) made of text and ``{stem}`` fields only, ending in an
    extension, e.g. ``{stem}_synced.mp4`` (:func:`heygemd.names.naming_parts`); ValueError if not."""
    example = output_name(value, "x")
    if not plain_name(example):
        raise ValueError(f"makes hidden, junk or still-being-copied names such as {example!r}")
    return value


class LoggingSettings(Section):
    format: Literal["auto", "journald", "json", "console"] = Field(
        "auto", description="auto: journald under systemd, console on a terminal, else JSON lines on stderr."
    )
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")


MIN_SECRET_BYTES = 16
"""Shortest token or signing secret accepted (``openssl rand -hex 32`` makes 64 bytes)."""


class WebSettings(Section):
    enabled: bool = Field(False, description="Serve the web dashboard and HTTP API inside `heygemd run`.")
    host: str = Field("127.0.0.1", description="Address the web server binds; any non-loopback address needs a token.")
    port: int = Field(7860, ge=0, le=65535, description="TCP port of the web server (0: any free port, logged).")
    token: SecretStr | None = Field(
        None,
        description="Access token: a bearer header for the API, a login form for the pages. Set it with "
        "HEYGEMD_WEB__TOKEN rather than in the file. Required for a non-loopback host, and then at least 16 bytes.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="A second token, for a Prometheus scraper: it opens GET /metrics and nothing else (web.token "
        "opens /metrics too). At least 16 bytes; set it with HEYGEMD_WEB__METRICS_TOKEN. Used only with web.token "
        "set (without one the server answers loopback names only, /metrics included, without a token).",
    )
    session_hours: float = Field(
        12.0, gt=0, description="A login to the pages lasts this long; logging out (or a restart) ends it at once."
    )
    max_file_mb: float = Field(4096.0, gt=0, description="Largest uploaded file, in MiB.")
    max_files: int = Field(50, ge=2, description="Most files in one uploaded job (the audio included).")
    max_total_mb: float = Field(16384.0, gt=0, description="Largest upload of one job, all files together, in MiB.")
    page_size: int = Field(20, ge=1, le=500, description="Jobs per page in the job list (pages and API).")
    public_url: str = Field(
        "",
        description="The dashboard's address as people reach it (e.g. https://lipsync.example.com), for links in "
        "notifications; empty: messages carry no link.",
    )
    fetch_hosts: tuple[str, ...] = Field(
        (),
        description="Hosts a job's input URLs may be downloaded from: names (cdn.example.com, *.example.com) or "
        "networks in CIDR form (10.0.0.0/8); empty: no URL inputs.",
    )
    fetch_timeout: float = Field(
        30.0, gt=0, description="Seconds a URL input's server may take to connect and between pieces of data."
    )
    fetch_deadline: float = Field(
        900.0,
        gt=0,
        description="Seconds the downloads of one job's URL inputs may take in all (the submission waits for them).",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError("must be an http:// or https:// address (no query), e.g. https://lipsync.example.com")
        return value

    @field_validator("fetch_hosts")
    @classmethod
    def _fetch_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_entries(value)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode("utf-8")) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long (e.g. from: openssl rand -hex 32)")
        return value


OnReview = Literal["flag", "retry"]


class QualitySettings(Section):
    """The check of every rendered video (``heygemd.quality``) and the thresholds of its verdict.

    Values measured on the calibration set of bench/README.md ("Quality check"). A video beyond any threshold is
    marked for review; it stays ``done``."""

    enabled: bool = Field(True, description="Check every rendered video after encoding (status.json `quality`).")
    on_review: OnReview = Field(
        "flag",
        description="What a video to review gets: flag (marked in status.json and on the dashboard) or retry "
        "(rendered once more with another installed engine, kept when that one passes).",
    )
    max_lead_ms: float = Field(
        200.0,
        ge=0,
        description="Most the mouth may lead the sound (AV offset, ms; speech itself leads: mouthwarp by 60 ms, "
        "natural speech by up to about 140 ms).",
    )
    max_lag_ms: float = Field(60.0, ge=0, description="Most the mouth may trail the sound (AV offset, ms).")
    min_sync: float = Field(
        0.3,
        ge=-1,
        le=1,
        description="Least correlation of the mouth opening with the speech loudness at the best offset.",
    )
    max_silence_motion: float = Field(
        0.5,
        ge=0,
        description="Most mouth movement in the audio's silences, as a share of its movement while speaking.",
    )
    max_frozen: float = Field(0.3, ge=0, le=1, description="Largest share of speech in which the mouth stands still.")
    min_face_coverage: float = Field(
        0.9, ge=0, le=1, description="Least share of frames with the face found and rendered."
    )
    max_jitter: float = Field(
        2.0, ge=0, description="Most frame-to-frame shake of the mouth's landmarks (% of the eye distance)."
    )
    max_seam: float = Field(
        6.0, ge=0, description="Largest colour step across the blend mask's edge beyond the source's (Lab units)."
    )


GPU_CLASS_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
"""A GPU class (``[queue] gpu_class``, job.toml ``gpu_class``): part of a queue name, e.g. ``a100``, ``l4``."""


class QueueSettings(Section):
    broker: str = Field(
        "",
        description="Redis URL of the farm's broker, e.g. redis://:PASSWORD@queue-host:6379/0. Empty: one host, "
        "`heygemd run` renders the jobs itself. Set: `heygemd run` is the intake and publishes one task per job, "
        "`heygemd worker` processes render them.",
    )
    queue: str = Field(
        "heygemd",
        description="Name of the queue of jobs any worker takes; a job.toml engine sends the job to "
        "<queue>.<engine>, taken only by workers that list that engine in `engines`.",
    )
    engines: tuple[str, ...] = Field(
        (),
        description="Engines this worker takes jobs for (their queues <queue>.<engine>); "
        "empty: the engine it is configured with.",
    )
    gpu_class: str = Field(
        "",
        pattern=rf"^$|{GPU_CLASS_PATTERN}",
        description="This worker's GPU class, e.g. a100: it also takes the jobs whose job.toml asks for "
        'gpu_class = "a100" (queues <queue>.gpu.<class>, <queue>.<engine>.gpu.<class>). Empty: only unclassed jobs.',
    )
    visibility_timeout: float = Field(
        86400.0,
        gt=0,
        description="Seconds before Redis hands an unacknowledged task to another worker. Keep it "
        "above the longest job; a live worker's heartbeat keeps extending it anyway.",
    )
    heartbeat_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between a worker's heartbeats for its current job (job lock, claim lease, "
        "task visibility). A job whose worker missed 3 heartbeats is free for another worker.",
    )
    path_map: dict[str, str] = Field(
        default_factory=dict,
        description="Shared storage mounted elsewhere on this host: intake path prefix -> "
        'this host\'s, e.g. {"/mnt/nas" = "/srv/nas"}.',
    )


NotifyEvent = Literal["job.finished", "job.failed", "server.trouble"]
"""What people are told about (``[notify] events``): every job that ends; jobs that end failed or partial;
trouble of the server (a full disk, an engine that fails to load, the broker unreachable for over a minute)."""


class NotifySettings(Section):
    signing_secret: SecretStr | None = Field(
        None,
        description="Key of the callbacks' HMAC-SHA256 signature (Heygemd-Signature), at least 16 bytes; set it "
        "with HEYGEMD_NOTIFY__SIGNING_SECRET rather than in the file. Without it no callback is accepted.",
    )
    callback_hosts: tuple[str, ...] = Field(
        (),
        description="Hosts a job's callback_url may name: names (hooks.example.com, *.example.com) or networks in "
        "CIDR form (10.0.0.0/8). A name reaching a loopback or private address needs that network listed too; "
        "link-local and cloud metadata addresses are always refused. Empty: no callbacks.",
    )
    urls: tuple[SecretStr, ...] = Field(
        (),
        description="Apprise URLs people are told on (slack://..., ntfys://..., mailtos://..., json://...); empty: "
        "nobody is told.",
    )
    events: tuple[NotifyEvent, ...] = Field(
        ("job.finished", "job.failed", "server.trouble"),
        description="What the urls are told about: job.finished (every job that ends), job.failed (jobs that end "
        "failed or partial), server.trouble (full disk, engine that fails to load, broker unreachable over a "
        "minute). A job that matches two is told once.",
    )

    @field_validator("signing_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode("utf-8")) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long (e.g. from: openssl rand -hex 32)")
        return value

    @field_validator("callback_hosts")
    @classmethod
    def _callback_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_entries(value)


class Settings(BaseSettings):
    """Every setting of heygemd. See config/heygemd.toml for the commented defaults."""

    model_config = SettingsConfigDict(
        env_prefix="HEYGEMD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    paths: PathsSettings = PathsSettings()
    intake: IntakeSettings = IntakeSettings()
    engine: EngineSettings = EngineSettings()
    faces: FacesSettings = FacesSettings()
    video: VideoSettings = VideoSettings()
    outbox: OutboxSettings = OutboxSettings()
    logging: LoggingSettings = LoggingSettings()
    web: WebSettings = WebSettings()
    queue: QueueSettings = QueueSettings()
    notify: NotifySettings = NotifySettings()
    quality: QualitySettings = QualitySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def find_config(explicit: Path | None = None) -> Path | None:
    """The TOML file to read, or None to run on defaults and environment alone."""
    if explicit is not None:
        return explicit
    env = os.environ.get("HEYGEMD_CONFIG")
    if env:
        return Path(env)
    for candidate in (SYSTEM_CONFIG, REPO_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_settings(config: Path | None = None) -> Settings:
    """Read settings from ``config`` (or the default search) plus the environment.

    Raises ConfigError naming the setting and the problem when the file or a value is invalid.
    """
    path = find_config(config)
    base = Path.cwd()
    if path is not None:
        if not path.is_file():
            raise ConfigError("configuration file not found", path=path, hint="Pass an existing file to --config.")
        base = path.resolve().parent

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        loaded = _FromFile()
    except ValidationError as exc:
        raise _invalid(exc, path) from None
    except ValueError as exc:  # TOML syntax errors surface as tomllib.TOMLDecodeError (a ValueError)
        raise ConfigError(f"cannot parse the file: {exc}", path=path) from None
    settings = Settings.model_validate(loaded.model_dump())
    return _resolve_paths(settings, base)


def _env_name(loc: tuple[int | str, ...]) -> str | None:
    """The ``HEYGEMD_*`` variable that set the setting at ``loc``, when one did (names compare case-insensitively)."""
    wanted = ("HEYGEMD_" + "__".join(str(part) for part in loc)).upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _invalid(exc: ValidationError, path: Path | None) -> ConfigError:
    """One message for every invalid value, each named where the user set it: the environment variable or the file."""
    from_env, from_file = [], []
    for err in exc.errors():
        setting = ".".join(str(p) for p in err["loc"])
        variable = _env_name(err["loc"])
        if variable is not None:
            from_env.append(f"{variable}={os.environ[variable]!r} (setting {setting}): {err['msg']}")
        else:
            from_file.append(f"{setting}: {err['msg']}")
    if from_env and not from_file:
        return ConfigError(
            f"invalid environment variable: {'; '.join(from_env)}",
            hint="Fix or unset the environment variable (in the shell, or the unit's Environment=/EnvironmentFile=).",
        )
    return ConfigError(f"invalid setting: {'; '.join(from_env + from_file)}", path=path)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def absolute(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    paths = settings.paths.model_copy(
        update={name: absolute(getattr(settings.paths, name)) for name in PathsSettings.model_fields}
    )
    engine = settings.engine.model_copy(update={"checkpoint": absolute(settings.engine.checkpoint)})
    return settings.model_copy(update={"paths": paths, "engine": engine})
