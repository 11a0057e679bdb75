"""Job folder -> JobSpec: audio/video discovery, job.toml options and their errors."""

from __future__ import annotations

import os
import stat
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from heygemd.daemon.jobs import JobOptions, load_job
from heygemd.errors import FileTooLarge, JobError, NotRegularFile
from heygemd.settings import IntakeSettings


def job(tmp_path: Path, *files: str, toml: str | None = None, name: str = "job") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in files:
        p = folder / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    if toml is not None:
        (folder / "job.toml").write_text(toml, encoding="utf-8")
    return folder


def test_basic_job(tmp_path: Path) -> None:
    folder = job(
        tmp_path,
        "voice.WAV",
        "clip10.mp4",
        "clip2.MOV",
        "still.jpg",
        "notes.txt",
        ".DS_Store",
        "._clip2.MOV",
        "Thumbs.db",
        ".ready",
        "@eaDir/x",
        "extras/y.mp4",
    )
    spec = load_job(folder)
    assert spec.job_id == spec.name == "job" and spec.folder == folder
    assert spec.audio == folder / "voice.WAV"
    assert [p.name for p in spec.videos] == ["clip2.MOV", "clip10.mp4", "still.jpg"]
    assert spec.ignored == ["extras/", "notes.txt"]  # junk, marker and OS folders are not "unknown"
    assert spec.options == JobOptions()


def test_chinese_and_space_names(tmp_path: Path) -> None:
    folder = job(tmp_path, "讲话 录音.mp3", "主持人 一.mp4", "主持人 二.webm", name="我的 任务")
    spec = load_job(folder, job_id="我的 任务-2")
    assert spec.name == "我的 任务" and spec.job_id == "我的 任务-2"
    assert spec.audio.name == "讲话 录音.mp3"
    assert [p.name for p in spec.videos] == ["主持人 一.mp4", "主持人 二.webm"]


def test_all_extensions_recognised(tmp_path: Path) -> None:
    audios = ["a.wav", "a.mp3", "a.m4a", "a.aac", "a.flac", "a.ogg", "a.opus", "a.wma"]
    videos = [
        "v.mp4",
        "v.mov",
        "v.mkv",
        "v.webm",
        "v.avi",
        "v.m4v",
        "v.mpg",
        "v.mpeg",
        "v.3gp",
        "i.jpg",
        "i.jpeg",
        "i.png",
        "i.bmp",
        "i.webp",
    ]
    folder = job(tmp_path, *audios, *videos, toml='audio = "a.opus"\n')
    spec = load_job(folder)
    assert spec.audio.name == "a.opus"
    assert sorted(p.name for p in spec.videos) == sorted(videos)
    assert sorted(spec.ignored) == sorted(a for a in audios if a != "a.opus")  # unused audios are listed


def test_options_from_job_toml(tmp_path: Path) -> None:
    folder = job(
        tmp_path,
        "v.wav",
        "a.mp4",
        toml='engine = "mouthwarp"\nnaming = "{stem}_synced.mp4"\nloop_mode = "loop"\ncrf = 23\n',
    )
    opts = load_job(folder).options
    assert (opts.engine, opts.naming, opts.loop_mode, opts.crf, opts.audio) == (
        "mouthwarp",
        "{stem}_synced.mp4",
        "loop",
        23,
        None,
    )


def test_engine_settings_from_job_toml_override_the_daemons_for_the_job(tmp_path: Path) -> None:
    folder = job(
        tmp_path,
        "v.wav",
        "a.mp4",
        toml='engine = "latentsync"\nlatentsync_steps = 8\nlatentsync_guidance = 2.5\ncrf = 20\n',
    )
    opts = load_job(folder).options
    assert opts.engine == "latentsync"
    assert opts.engine_settings() == {"latentsync_steps": 8, "latentsync_guidance": 2.5}  # not crf: not [engine]
    assert load_job(job(tmp_path, "v.wav", "a.mp4", name="plain")).options.engine_settings() == {}


def test_job_toml_case_insensitive_and_bom(tmp_path: Path) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4")
    (folder / "JOB.TOML").write_bytes("\ufeffcrf = 30\n".encode())
    assert load_job(folder).options.crf == 30


@pytest.mark.parametrize(
    ("toml", "field", "words"),
    [
        ("crf = 99\n", "crf", "less than or equal to 51"),
        ('crf = "high"\n', "crf", "integer"),
        ('engine = "sadtalker"\n', "engine", "wav2lip"),
        ('loop_mode = "bounce"\n', "loop_mode", "pingpong"),
        ('naming = "out.mp4"\n', "naming", "{stem}"),
        ('naming = "sub/{stem}.mp4"\n', "naming", "not a path"),
        ('naming = "{stem}_{n}.mp4"\n', "naming", "only the placeholder"),
        ('naming = "..{stem.translate.__doc__[223]}{stem}.mp4"\n', "naming", "attribute or index"),
        ('naming = "{stem:X>250000000}{stem}.mp4"\n', "naming", "format spec"),
        ("qualty = 3\n", "qualty", "unknown option"),
        ("latentsync_steps = 0\n", "latentsync_steps", "greater than or equal to 1"),
        ("latentsync_guidance = -1.0\n", "latentsync_guidance", "greater than or equal to 0"),
        ("latentsync_guidance = inf\n", "latentsync_guidance", "finite number"),
    ],
)
def test_bad_job_toml_names_field(tmp_path: Path, toml: str, field: str, words: str) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4", toml=toml)
    with pytest.raises(JobError) as info:
        load_job(folder)
    err = info.value
    assert "job.toml" in err.message and f"'{field}'" in err.message and words in err.message
    assert err.code == "BAD_JOB" and "allowed options" in err.hint


def test_unparsable_job_toml(tmp_path: Path) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4", toml="crf = = 3\n")
    with pytest.raises(JobError, match=r"job\.toml: not valid TOML"):
        load_job(folder)


def test_no_audio(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="no audio file") as info:
        load_job(job(tmp_path, "a.mp4", "b.mp4"))
    assert "wav" in info.value.hint


def test_no_videos(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="no presenter video or image"):
        load_job(job(tmp_path, "voice.wav", "readme.txt"))


def test_several_audios_need_job_toml(tmp_path: Path) -> None:
    folder = job(tmp_path, "take 1.wav", "take 2.mp3", "a.mp4")
    with pytest.raises(JobError) as info:
        load_job(folder)
    assert '"take 1.wav"' in info.value.message and '"take 2.mp3"' in info.value.message
    assert 'audio = "' in info.value.hint and "job.toml" in info.value.hint


def test_audio_option_picks_and_validates(tmp_path: Path) -> None:
    folder = job(tmp_path, "take 1.wav", "take 2.mp3", "a.mp4", toml='audio = "TAKE 2.mp3"\n')
    assert load_job(folder).audio.name == "take 2.mp3"  # case-insensitive when unambiguous
    (folder / "job.toml").write_text('audio = "take 3.wav"\n')
    with pytest.raises(JobError) as info:
        load_job(folder)
    assert "'audio'" in info.value.message and "take 3.wav" in info.value.message and "take 1.wav" in info.value.message


def test_audio_option_may_name_a_video_whose_sound_is_the_speech(tmp_path: Path) -> None:
    folder = job(tmp_path, "talk.mp4", "anna.mp4", "face.jpg", toml='audio = "talk.mp4"\n')
    spec = load_job(folder)
    assert spec.audio.name == "talk.mp4" and [v.name for v in spec.videos] == ["anna.mp4", "face.jpg"]
    (folder / "job.toml").write_text('audio = "face.jpg"\n')  # a photo has no sound track
    with pytest.raises(JobError, match="not an audio file or a video"):
        load_job(folder)


def test_in_flight_files_are_skipped(tmp_path: Path) -> None:
    spec = load_job(job(tmp_path, "v.wav", "a.mp4", "b.mp4.part", "~$notes.docx"))
    assert [p.name for p in spec.videos] == ["a.mp4"] and spec.ignored == []


T = TypeVar("T")


def unblocked(fifo: Path, call: Callable[[], T], timeout: float = 20.0) -> T:
    """``call()``, which must return (or raise) without waiting for a writer on the FIFO ``fifo``. Should it still
    run after ``timeout`` s (blocked opening or reading the FIFO), the FIFO gets a writer that closes at once, so
    the read ends and the test fails instead of hanging."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout)
        raise AssertionError(f"still blocked on the FIFO {fifo} after {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def test_a_fifo_job_toml_fails_at_once_instead_of_blocking(tmp_path: Path) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4")
    os.mkfifo(folder / "job.toml")
    with pytest.raises(NotRegularFile) as info:
        unblocked(folder / "job.toml", lambda: load_job(folder))
    assert info.value.code == "NOT_A_FILE"
    assert info.value.message == f"{folder}/job.toml: is a named pipe (FIFO), not a regular file"
    assert "regular files" in info.value.hint


def test_a_device_job_toml_is_refused_unread(tmp_path: Path) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4")
    try:
        os.mknod(folder / "job.toml", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    with pytest.raises(NotRegularFile, match=r"job\.toml: is a character device, not a regular file"):
        load_job(folder)


def test_a_huge_sparse_job_toml_is_refused_by_its_size_without_reading_it(tmp_path: Path) -> None:
    folder = job(tmp_path, "v.wav", "a.mp4")
    with open(folder / "job.toml", "wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MiB of zeros declared, nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(FileTooLarge) as info:
            load_job(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "FILE_TOO_LARGE"
    assert info.value.message == f"{folder}/job.toml: is 67,108,864 bytes; at most 65,536 are read"
    assert peak < 1 << 20, f"{peak:,} bytes allocated: the file was read"


def test_the_job_toml_size_cap_is_the_setting(tmp_path: Path) -> None:
    commented = "# a long comment\n" * 5000 + "crf = 20\n"  # 85 kB: a job.toml with lots of notes
    folder = job(tmp_path, "v.wav", "a.mp4", toml=commented)
    assert IntakeSettings().max_job_toml_kb == 64
    with pytest.raises(FileTooLarge, match="at most 65,536"):
        load_job(folder)
    assert load_job(folder, max_toml_bytes=IntakeSettings(max_job_toml_kb=128).max_job_toml_bytes).options.crf == 20


@pytest.mark.parametrize("nested", ["[" * 20000 + "]" * 20000, "{a=" * 9000 + "1" + "}" * 9000])
def test_a_job_toml_nested_too_deeply_is_bad_toml_not_a_crash(tmp_path: Path, nested: str) -> None:
    # under the size cap, but Python's TOML parser recurses once per level
    folder = job(tmp_path, "v.wav", "a.mp4", toml=f"crf = {nested}\n")
    with pytest.raises(JobError, match=r"job\.toml: not valid TOML: nested too deeply"):
        load_job(folder)
