"""``python -m bench.quality``: the quality check's calibration set, made here and measured.

Each case is made with the real engine, dlib and ffmpeg (``tests/quality/media.py``) and checked as the daemon
does (``check_render``: a render with its track and the job's speech) or as ``heygemd score`` does (any file,
with its own sound; with ``--source`` for the seam). The thresholds of ``[quality]`` were chosen from this table
(bench/README.md, "Quality check"). The check's cost is measured by ``python -m bench --quality``.

    python -m bench.quality [--size 1280x720] [--footage DIR] [--json] [--keep]

``--footage DIR``: also every video with sound in DIR (real talking heads you have), each with its own sound,
shifted by +-0.2 and +-0.4 s, and with the next video's sound (foreign).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.inputs import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHIFTS_S = (0.2, 0.4, 1.0, -0.2, -0.4, -1.0)


@dataclass(frozen=True)
class Case:
    name: str
    expected: str
    """What the verdict should say: "ok", "review" (any reason), or a reason code that must be among its reasons."""
    run: Callable[[], object]


def cases(work: Path, size: tuple[int, int]) -> list[Case]:
    from heygemd.pipeline.face_detectors import DlibDetector
    from heygemd.quality.check import Rendering, check_render, score_file
    from heygemd.settings import QualitySettings
    from tests.engines import talking
    from tests.quality import media

    detector = DlibDetector()
    thresholds = QualitySettings()
    voice = media.speech(work / "speech.wav")
    presenter = media.presenter(work / "presenter.mp4", size=size)
    good = media.render(presenter, voice, work / "good.mp4", detector, work)
    voice_a = talking.speech(work / "a.wav", talking.SCRIPT_A)
    voice_b = talking.speech(work / "b.wav", talking.SCRIPT_B)
    source_a = media.talking_source(work / "talking-a.mp4", voice_a, detector)

    def checked(render: media.Render) -> Callable[[], object]:
        return lambda: check_render(render.output, render.audio, Rendering.of(render.result), thresholds)

    def scored(make: Callable[[], Path], source: Path | None = None) -> Callable[[], object]:
        return lambda: score_file(make(), thresholds, source=source)

    out: list[Case] = [
        Case("good render (daemon check)", "ok", checked(good)),
        Case("good render (score)", "ok", scored(lambda: good.output)),
        Case("good render (score --source)", "ok", scored(lambda: good.output, presenter)),
    ]
    for shift in SHIFTS_S:
        # beyond the +-0.5 s searched the offset is not found: flagged for the weak sync or the offset at the edge
        expected = "AV_OFFSET" if abs(shift) < 0.5 else "review"

        def shifted(shift: float = shift) -> Path:
            return media.mux(good.output, voice.path, work / f"shift{shift:+.1f}.mp4", shift_s=shift)

        out.append(Case(f"good render, sound {shift:+.1f} s", expected, scored(shifted)))
    out += [
        Case(
            "still presenter + speech (frozen)",
            "FROZEN_MOUTH",
            scored(lambda: media.mux(presenter, voice.path, work / "frozen.mp4", loop_video=True)),
        ),
        Case(
            "talking source, its own speech",
            "ok",
            scored(lambda: media.mux(source_a, voice_a.wav, work / "talking-own.mp4")),
        ),
        Case(
            "talking source, foreign speech",
            "WEAK_SYNC",
            scored(lambda: media.mux(source_a, voice_b.wav, work / "foreign.mp4")),
        ),
        Case(
            "talking source re-driven (daemon check)",
            "ok",
            checked(media.render(source_a, voice_b.features, work / "redriven.mp4", detector, work)),
        ),
    ]
    for shake in (0.02, 0.04):
        out.append(
            Case(
                f"good render, lower face shaken {shake:.0%}",
                "JITTER" if shake >= 0.04 else "ok",
                scored(lambda shake=shake: media.jittered(good, work / f"jitter{shake}.mp4", shake=shake), presenter),
            )
        )
    for step in (4.0, 8.0, 12.0):
        out.append(
            Case(
                f"good render, lower face +{step:.0f} levels",
                "SEAM" if step >= 8 else "ok",
                scored(lambda step=step: media.seamed(good, work / f"seam{step:.0f}.mp4", step=step), presenter),
            )
        )
    return out


def footage_cases(work: Path, folder: Path) -> list[Case]:
    from heygemd.quality.check import score_file
    from heygemd.settings import QualitySettings
    from tests.quality import media

    thresholds = QualitySettings()
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"))
    out: list[Case] = []
    for n, video in enumerate(videos):
        out.append(Case(f"{video.stem[:30]}, own sound", "ok", lambda video=video: score_file(video, thresholds)))
        for shift in (0.2, 0.4, -0.2, -0.4):

            def shifted(video: Path = video, shift: float = shift) -> object:
                made = media.mux(video, video, work / f"{video.stem}{shift:+.1f}.mp4", shift_s=shift)
                return score_file(made, thresholds)

            out.append(Case(f"{video.stem[:30]}, sound {shift:+.1f} s", "AV_OFFSET", shifted))
        if len(videos) > 1:
            other = videos[(n + 1) % len(videos)]

            def foreign(video: Path = video, other: Path = other) -> object:
                return score_file(media.mux(video, other, work / f"{video.stem}-foreign.mp4"), thresholds)

            out.append(Case(f"{video.stem[:30]}, {other.stem[:12]}'s sound", "WEAK_SYNC", foreign))
    return out


def calibrate(work: Path, size: tuple[int, int], footage: Path | None = None) -> list[dict]:
    rows = []
    for case in cases(work, size) + (footage_cases(work, footage) if footage else []):
        started = time.perf_counter()
        report = case.run()
        seconds = time.perf_counter() - started
        values = report.model_dump()  # type: ignore[attr-defined]
        codes = [reason["code"] for reason in values.pop("reasons")]
        met = {"ok": not values["review"], "review": values["review"]}.get(case.expected, case.expected in codes)
        rows.append({"case": case.name, "expected": case.expected, "met": met, **values, "reasons": codes})
        rows[-1]["seconds"] = round(seconds, 1)
        print(_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


COLUMNS = (
    ("av_offset_ms", "offset ms", "{:.0f}"),
    ("av_offset_frames", "frames", "{:.2f}"),
    ("sync", "sync", "{:.2f}"),
    ("silence_motion", "silence", "{:.2f}"),
    ("frozen", "frozen", "{:.2f}"),
    ("face_coverage", "face", "{:.2f}"),
    ("jitter", "jitter", "{:.2f}"),
    ("seam", "seam", "{:.1f}"),
)


def _row(row: dict) -> str:
    cells = [f"{row['case']:42}"]
    for key, _title, fmt in COLUMNS:
        value = row[key]
        cells.append(f"{'-' if value is None else fmt.format(value):>9}")
    verdict = ",".join(row["reasons"]) or "ok"
    cells.append(f"  {verdict} {'' if row['met'] else '(expected ' + row['expected'] + ')'}")
    return "".join(cells)


def table(rows: list[dict]) -> str:
    head = f"{'case':42}" + "".join(f"{title:>9}" for _key, title, _fmt in COLUMNS) + "  verdict"
    return "\n".join([head, *(_row(row) for row in rows)])


def main(argv: list[str] | None = None) -> int:
    from bench.cli import _size

    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(640, 360), help="presenter size (default 640x360)")
    parser.add_argument("--footage", type=Path, help="a folder of real talking-head videos with sound to add")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the made files (their folder is printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="heygemd-quality-"))
    try:
        rows = calibrate(work, args.size, args.footage)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0 if all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
