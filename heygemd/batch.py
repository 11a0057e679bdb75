"""``heygemd single`` and ``heygemd batch``: one audio, one or many videos, rendered one after another.

A failing video is reported and skipped; the others go on. The audio is decoded once for all of them. The files
are the administrator's choice, so a symbolic link among them is followed (a job folder's never are, nor a
presenter library's: ``batch --presenters`` renders library presenters as a job naming them would, each with its
toml's face and loop mode).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from heygemd.daemon.library import (
    PresenterOptions,
    library_files,
    load_presenter_options,
    named,
    unknown_presenter,
)
from heygemd.errors import EncodeError, ErrorInfo, HeygemdError, JobError, report_failure
from heygemd.lipsync import LipSyncSession
from heygemd.names import is_presenter, printable
from heygemd.pipeline.run import RenderResult, VideoProgress
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.batch")


@dataclass(frozen=True)
class VideoOutcome:
    video: Path
    output: Path
    result: RenderResult | None
    error: ErrorInfo | None

    @property
    def ok(self) -> bool:
        return self.error is None


def videos_in(folder: Path) -> list[Path]:
    """Videos and still images directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise JobError("not a folder", path=folder, hint="Pass the folder that holds the presenter videos.")
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_presenter(p))
    if not found:
        raise JobError("no videos or images in this folder", path=folder)
    return found


@dataclass(frozen=True)
class LibraryVideos:
    """What ``batch --presenters`` names in the presenter library: the presenters' files (with their options), and
    those that cannot be rendered (unknown, a link, a bad toml), each with its error."""

    videos: list[tuple[str, Path, PresenterOptions]]
    failed: list[tuple[str, ErrorInfo]]


def library_videos(settings: Settings, wanted: list[str] | str) -> LibraryVideos:
    """The presenters ``wanted`` (names, or ``"all"``) of ``settings``' library."""
    folder = settings.paths.presenters_dir
    files = library_files(settings)
    videos: list[tuple[str, Path, PresenterOptions]] = []
    failed: list[tuple[str, ErrorInfo]] = []
    for name, found in named(files, wanted):
        if found is None:
            failed.append((name, unknown_presenter(name, files, folder).info()))
            continue
        if found.problem is not None:
            failed.append((name, found.problem))
            continue
        try:
            videos.append((found.name, folder / found.file, load_presenter_options(folder, found)))
        except HeygemdError as exc:
            failed.append((name, exc.info()))
    return LibraryVideos(videos, failed)


def render_many(
    session: LipSyncSession,
    audio_path: Path,
    jobs: Sequence[tuple[Path, Path]],
    *,
    progress_bar: bool | None = None,
    options: Mapping[Path, PresenterOptions] | None = None,
) -> list[VideoOutcome]:
    """Render every (video, output) pair with ``audio_path``; one failure does not stop the rest. ``options``: the
    face and loop mode of some videos (library presenters)."""
    audio = session.audio(_followed(audio_path))
    log.info("audio.ready", audio=str(audio_path), duration_s=round(audio.duration, 3))
    show_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
    outcomes: list[VideoOutcome] = []
    for number, (video, output) in enumerate(jobs, start=1):
        label = printable(f"[{number}/{len(jobs)}] {video.name}")
        bar = _ProgressBar(label) if show_bar else None
        try:
            _make_folder(output.parent)
            own = (options or {}).get(video, PresenterOptions())
            result = session.render(
                _followed(video),
                audio,
                output,
                loop_mode=own.loop_mode,
                face=own.face,
                on_progress=bar.update if bar else None,
            )
        except Exception as exc:  # per-video boundary: the video fails, the batch goes on
            outcomes.append(VideoOutcome(video, output, None, report_failure(log.bind(video=str(video)), "video", exc)))
        else:
            outcomes.append(VideoOutcome(video, output, result, None))
            log.info(
                "video.done",
                video=str(video),
                output=str(output),
                seconds=round(result.timings["total"], 2),
                face_ratio=round(result.face_ratio, 3),
            )
        finally:
            if bar:
                bar.close()
    return outcomes


def _followed(path: Path) -> Path:
    """Where a symbolic link named on the command line points (errors then name that file); any other path as is."""
    return path.resolve() if path.is_symlink() else path


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EncodeError(
            f"cannot create the output folder ({exc.strerror})",
            path=folder,
            hint="Choose an output folder you can write to (--out).",
        ) from None


def summary(outcomes: Sequence[VideoOutcome]) -> str:
    """A few lines a person reads at the end of a batch."""
    lines = []
    for outcome in outcomes:
        if outcome.ok and outcome.result is not None:
            r = outcome.result
            lines.append(
                f"  ok      {outcome.video.name} -> {outcome.output}  "
                f"({r.frames} frames, face in {r.face_ratio:.0%}, {r.timings['total']:.1f} s)"
            )
        elif outcome.error is not None:
            lines.append(f"  FAILED  {outcome.video.name}: [{outcome.error.code}] {outcome.error.message}")
            if outcome.error.hint:
                lines.append(f"          what to do: {outcome.error.hint}")
    good = sum(o.ok for o in outcomes)
    failed = f", {len(outcomes) - good} failed" if good < len(outcomes) else ""
    lines.append(f"{good} of {len(outcomes)} videos done{failed}")
    return "\n".join(printable(line) for line in lines)


class _ProgressBar:
    """A tqdm bar per video, driven by render progress callbacks."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self._bar = tqdm(
            total=100,
            desc=label,
            unit="%",
            leave=True,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
        )

    def update(self, progress: VideoProgress) -> None:
        self._bar.n = int(progress.fraction * 100)
        self._bar.set_postfix_str(f"{progress.stage} {progress.frames_done}/{progress.frames_total}", refresh=True)

    def close(self) -> None:
        self._bar.close()
