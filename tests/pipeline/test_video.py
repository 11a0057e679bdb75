"""Streaming video I/O against the real ffmpeg/ffprobe, with tiny media generated on the spot."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import presenter_frames, presenter_video
from heygemd.errors import DecodeError, DiskFull, EncodeError, NoAudioStream, NotMedia, NoVideoStream, ToolMissing
from heygemd.pipeline.ffmpeg_tools import find_tool, is_disk_full
from heygemd.pipeline.video import (
    ScheduledFrames,
    VideoWriter,
    frame_schedule,
    output_frame_count,
    plain_transcode,
    probe_video,
    read_frames,
    top_level_atoms,
    write_poster,
)

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="ffmpeg/ffprobe not installed")

W, H, FPS = 160, 120, 25


# --- helpers ---------------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True)


def lavfi_clip(out: Path, *codec: str, size: str = f"{W}x{H}", seconds: float = 1, rate: int = FPS,
               vf: str | None = None) -> Path:
    """testsrc2 encoded with ``codec`` args (default H.264 yuv420p)."""
    codec = codec or ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
    source = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    ffmpeg("-f", "lavfi", "-i", source, *(["-vf", vf] if vf else []), *codec, str(out))
    return out


def lavfi_reference(size: str = f"{W}x{H}", seconds: float = 1, rate: int = FPS) -> list[np.ndarray]:
    """The exact testsrc2 frames, as BGR, without any encoding."""
    width, height = map(int, size.split("x"))
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], check=True, capture_output=True).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3))


def sine(out: Path, seconds: float, *codec: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *codec, str(out))
    return out


def ffprobe_json(path: Path) -> dict:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def ffmpeg_children() -> list[int]:
    """PIDs of ffmpeg processes (running or zombie) whose parent is this test process."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == me and comm == "ffmpeg":
            found.append(int(entry.name))
    return found


def open_files_under(directory: Path) -> list[str]:
    targets = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if t.startswith(str(directory))]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def h264(media: Path) -> Path:
    return lavfi_clip(media / "演讲 视频 1.mp4")


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    return lavfi_reference()


# --- tools -----------------------------------------------------------------------------------------


def test_find_tool_finds_ffmpeg_and_names_missing_tools():
    assert Path(find_tool("ffmpeg")).samefile(FFMPEG)
    with pytest.raises(ToolMissing) as err:
        find_tool("ffmpeg-that-does-not-exist")
    assert "ffmpeg-that-does-not-exist" in err.value.message
    assert "apt-get install ffmpeg" in err.value.hint


# --- probe + read ----------------------------------------------------------------------------------


CODECS = {
    "h264": (("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"), "mp4", "h264", 8),
    "h264-10bit": (("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"), "mp4", "h264", 10),
    "hevc-10bit": (("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                    "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1"), "mp4", "hevc", 10),
    "vp9": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"), "webm", "vp9", 8),
}


def has_encoder(name: str) -> bool:
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.startswith(" "))


@pytest.mark.parametrize("kind", list(CODECS))
def test_probe_and_read_codecs(kind, media, reference):
    args, ext, codec, depth = CODECS[kind]
    if not has_encoder(args[1]):
        pytest.skip(f"this ffmpeg has no {args[1]} encoder")
    clip = lavfi_clip(media / f"{kind} clip.{ext}", *args)
    info = probe_video(clip)
    assert (info.codec, info.bit_depth, info.width, info.height) == (codec, depth, W, H)
    assert info.fps == FPS and info.frame_count == FPS and not info.is_vfr and not info.is_still
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert not info.has_audio and info.rotation == 0
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 and f.flags.writeable for f in frames)
    # Decoded to 8-bit with the right colours: close to the unencoded source, frame by frame.
    for index in (0, 12, 24):
        assert mad(frames[index], reference[index]) < 10
    assert mad(frames[0], reference[12]) > 2 * mad(frames[0], reference[0])


def test_odd_size_is_cropped_to_even(media):
    clip = lavfi_clip(media / "odd.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p",
                      size="322x242", vf="format=yuv444p,crop=321:241:0:0")  # testsrc2 itself only makes even sizes
    assert (ffprobe_json(clip)["streams"][0]["width"], ffprobe_json(clip)["streams"][0]["height"]) == (321, 241)
    info = probe_video(clip)
    assert (info.width, info.height) == (320, 240)
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count == FPS
    reference = lavfi_reference(size="322x242")
    assert frames[5].shape == (240, 320, 3)
    assert mad(frames[5], reference[5][:240, :320]) < 10


@pytest.mark.parametrize("tag", [90, 270])
def test_rotated_phone_video_is_delivered_upright(tag, media, h264):
    rotated = media / f"phone rot{tag}.mp4"
    ffmpeg("-i", str(h264), "-c", "copy", "-metadata:s:v", f"rotate={tag}", str(rotated))
    info = probe_video(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (H, W)
    upright = list(read_frames(info))
    stored = list(read_frames(probe_video(h264)))
    assert len(upright) == info.frame_count == len(stored)
    k = -info.rotation // 90  # np.rot90 turns counter-clockwise; rotation is clockwise
    for index in (0, 20):
        assert upright[index].shape == (W, H, 3)
        assert mad(upright[index], np.rot90(stored[index], k)) < 6  # chroma is resampled after turning
        assert mad(upright[index], np.rot90(stored[index], -k)) > 20  # and not the other way round


def test_vfr_phone_video_is_delivered_as_cfr(media):
    # 25 fps for 2 s with frames 10..19 missing: the camera stalled for 0.4 s (avg 20 fps).
    clip = media / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=25:duration=2,select='not(between(n,10,19))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(clip))
    info = probe_video(clip)
    assert info.is_vfr
    assert info.fps == 20.0
    assert info.frame_count == round(info.duration * info.fps) == 40
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count
    # Which stored frame each delivered frame shows: in time order, with the stall held, not squeezed out.
    stored = subprocess.run([FFMPEG, "-v", "error", "-i", str(clip), "-fps_mode", "passthrough", "-f", "rawvideo",
                             "-pix_fmt", "bgr24", "-"], check=True, capture_output=True).stdout
    stored = np.frombuffer(stored, np.uint8).reshape(-1, H, W, 3)
    shown = []
    for frame in frames:
        (best, index), (second, _) = sorted((mad(frame, s), i) for i, s in enumerate(stored))[:2]
        assert best < 0.5 * second  # clearly one stored frame (not a blend); colour rounding aside
        shown.append(index)
    assert shown[0] == 0 and shown[-1] == len(stored) - 1
    assert shown == sorted(shown)
    assert max(shown.count(i) for i in set(shown)) >= 4  # frame 9 is held for the 0.4 s stall


def test_stills_by_content_not_extension(media):
    image = np.zeros((60, 90, 3), np.uint8)
    image[:, :30] = (0, 0, 255)
    png = media / "portrait.png"
    cv2.imwrite(str(png), image)
    disguised = media / "portrait really.mp4"
    shutil.copy(png, disguised)
    for path in (png, disguised):
        info = probe_video(path, still_fps=30.0)
        assert info.is_still and info.frame_count == 1 and info.fps == 30.0
        assert (info.width, info.height) == (90, 60)
        frames = list(read_frames(info))
        assert len(frames) == 1 and np.array_equal(frames[0], image)
    video_named_png = media / "clip.png"
    lavfi_clip(media / "clip.mp4")
    shutil.copy(media / "clip.mp4", video_named_png)
    assert not probe_video(video_named_png).is_still


def test_jpeg_exif_orientation_is_applied(media):
    from PIL import Image

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :20] = 255  # white band on the left of the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    jpg = media / "phone photo.jpg"
    image.save(jpg, exif=exif.tobytes(), quality=95)
    info = probe_video(jpg)
    assert info.is_still and info.rotation == 90 and (info.width, info.height) == (40, 80)
    (frame,) = read_frames(info)
    assert frame.shape == (80, 40, 3)
    assert frame[:18].mean() > 240 and frame[22:].mean() < 15  # the band is now on top


def test_not_media_and_audio_only_are_named_errors(media):
    text = media / "notes.txt"
    text.write_text("hello world, this is not a video\n" * 300)  # ffprobe reads big .txt files as ANSI art
    with pytest.raises(NotMedia) as err:
        probe_video(text)
    assert "notes.txt" in err.value.message
    junk = media / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(NotMedia):
        probe_video(junk)
    with pytest.raises(NotMedia):
        probe_video(media / "missing.mp4")
    wav = sine(media / "speech only.wav", 0.5)
    with pytest.raises(NoVideoStream) as err:
        probe_video(wav)
    assert "speech only.wav" in err.value.message
    cover = media / "song.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-f", "lavfi", "-i", "color=red:size=32x32:duration=1",
           "-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-frames:v", "1",
           "-disposition:v", "attached_pic", str(cover))
    with pytest.raises(NoVideoStream):
        probe_video(cover)  # cover art is not a presenter


def test_truncated_files_raise_decode_errors(media, h264):
    whole = h264.read_bytes()
    cut = media / "cut copy.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # moov at the end: never arrived
    with pytest.raises(DecodeError) as err:
        probe_video(cut)
    assert "cut copy.mp4" in err.value.message
    faststart = media / "faststart.mp4"
    ffmpeg("-i", str(h264), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    cut_fs = media / "cut faststart.mp4"
    cut_fs.write_bytes(data[: len(data) // 2])  # moov first, mdat cut short
    with pytest.raises(DecodeError, match="truncated"):
        probe_video(cut_fs)
    mkv = lavfi_clip(media / "long.mkv", seconds=2)
    cut_mkv = media / "cut.mkv"
    cut_mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    info = probe_video(cut_mkv)  # Matroska states its duration up front; the frames are missing
    with pytest.raises(DecodeError, match="of 50 frames"):
        for _ in read_frames(info):
            pass


def test_hdr_input_is_tone_mapped_to_8bit(media, reference):
    if not has_encoder("libx265"):
        pytest.skip("this ffmpeg has no libx265 encoder")
    clip = lavfi_clip(media / "hdr.mp4", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                      "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
                      "-colorspace", "bt2020nc")
    info = probe_video(clip)
    assert info.hdr and info.bit_depth == 10
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count == FPS
    assert 40 < frames[0].mean() < 220 and frames[0].std() > 20  # a picture, neither blank nor clipped


def test_trimmed_copy_with_edit_list_counts_shown_frames(media):
    long = lavfi_clip(media / "long.mp4", seconds=3)
    trimmed = media / "trimmed.mp4"
    ffmpeg("-ss", "0.5", "-i", str(long), "-c", "copy", str(trimmed))  # keeps hidden pre-roll samples
    info = probe_video(trimmed)
    assert info.frame_count == pytest.approx(2.5 * FPS, abs=1)
    assert len(list(read_frames(info))) == info.frame_count


def test_read_frames_pads_to_frame_count_and_truncates(h264):
    info = probe_video(h264)
    stored = list(read_frames(info))
    longer = list(read_frames(dataclasses.replace(info, frame_count=info.frame_count + 2)))
    assert len(longer) == info.frame_count + 2
    assert np.array_equal(longer[-1], stored[-1]) and np.array_equal(longer[-2], stored[-1])
    shorter = list(read_frames(dataclasses.replace(info, frame_count=10)))
    assert len(shorter) == 10 and all(np.array_equal(a, b) for a, b in zip(shorter, stored))


def test_abandoned_reader_kills_and_reaps_ffmpeg(media):
    clip = lavfi_clip(media / "ten seconds.mp4", seconds=10)
    frames = read_frames(probe_video(clip))
    next(frames)
    (child,) = ffmpeg_children()
    session = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[3])
    assert session == child != os.getsid(0)  # its own session: a Ctrl-C to our group does not reach it
    frames.close()
    assert ffmpeg_children() == []


# --- schedule --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_source", [1, 2, 3, 7])
@pytest.mark.parametrize("n_out", [0, 1, 5, 6, 7, 30])
@pytest.mark.parametrize("mode", ["pingpong", "loop"])
def test_frame_schedule_properties(n_source, n_out, mode):
    schedule = list(frame_schedule(n_source, n_out, mode))
    assert len(schedule) == n_out
    assert all(0 <= i < n_source for i in schedule)
    if n_source == 1:
        assert schedule == [0] * n_out
        return
    if n_out <= n_source:
        assert schedule == list(range(n_out))  # trimmed
        return
    assert schedule[:n_source] == list(range(n_source))
    steps = [b - a for a, b in zip(schedule, schedule[1:])]
    if mode == "pingpong":
        assert all(abs(s) == 1 for s in steps)  # never a repeated frame, never a jump
        turns = [schedule[i] for i in range(1, n_out - 1) if steps[i - 1] != steps[i]]
        assert set(turns) <= {0, n_source - 1}
    else:
        assert all(s == 1 or (a, b) == (n_source - 1, 0) for s, a, b in zip(steps, schedule, schedule[1:]))


def test_frame_schedule_examples_and_errors():
    assert list(frame_schedule(4, 11, "pingpong")) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert list(frame_schedule(3, 7, "loop")) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        frame_schedule(0, 3, "loop")
    with pytest.raises(ValueError):
        frame_schedule(3, 3, "bounce")  # type: ignore[arg-type]


def test_output_frame_count_covers_the_audio():
    assert output_frame_count(1.23, 25) == 31
    assert output_frame_count(2.0, 25) == 50
    assert output_frame_count(0.001, 25) == 1


# --- scheduled frames with spool -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pingpong", "loop"])
@pytest.mark.parametrize("compression", ["none", "png"])
def test_scheduled_frames_replay_bitwise_and_remove_spool(mode, compression, media, tmp_path):
    clip = presenter_video(media / f"presenter {mode} {compression}.mp4", seconds=0.4, size=(W, H))
    info = probe_video(clip)
    forward = list(read_frames(info))
    n_out = 3 * info.frame_count
    work = tmp_path / "work"
    expected = list(frame_schedule(info.frame_count, n_out, mode))
    got = []
    with ScheduledFrames(info, n_out, mode, work, compression=compression) as frames:
        assert frames.needs_spool and len(frames) == n_out
        for index, frame in frames:
            frame[0, 0] = 255 - frame[0, 0]  # consumers may draw on frames; the spool must not see it
            frame[0, 0] = 255 - frame[0, 0]
            got.append((index, frame))
            if len(got) == n_out - 1:
                assert os.listdir(work) == []  # the spool is never visible by name...
                assert len(open_files_under(work)) == 1  # ...but lives in work_dir
                if compression == "none":
                    assert frames.spool_bytes == info.frame_count * info.frame_bytes
                else:
                    assert 0 < frames.spool_bytes < info.frame_count * info.frame_bytes
    assert [i for i, _ in got] == expected
    assert all(np.array_equal(frame, forward[i]) for i, frame in got)
    assert open_files_under(work) == [] and os.listdir(work) == []
    assert ffmpeg_children() == []


def test_scheduled_frames_forward_only_needs_no_spool(h264, tmp_path):
    info = probe_video(h264)
    forward = list(read_frames(info))
    with ScheduledFrames(info, 10, "pingpong", tmp_path) as frames:
        assert not frames.needs_spool
        got = list(frames)
        assert frames.spool_bytes == 0
    assert [i for i, _ in got] == list(range(10))
    assert all(np.array_equal(f, forward[i]) for i, f in got)
    assert ffmpeg_children() == []


def test_scheduled_frames_still_repeats_one_frame(media, tmp_path):
    png = media / "still.png"
    cv2.imwrite(str(png), np.full((40, 60, 3), 77, np.uint8))
    with ScheduledFrames(probe_video(png), 5, "pingpong", tmp_path) as frames:
        got = list(frames)
    assert [i for i, _ in got] == [0] * 5 and all(f.shape == (40, 60, 3) and f[0, 0, 0] == 77 for _, f in got)
    assert got[0][1] is not got[1][1]  # separate arrays: drawing on one leaves the others alone


def test_abandoned_scheduled_frames_stop_ffmpeg_and_free_spool(h264, tmp_path):
    info = probe_video(h264)
    with ScheduledFrames(info, 100, "pingpong", tmp_path) as frames:
        iterator = iter(frames)
        next(iterator)
        assert len(ffmpeg_children()) == 1 and len(open_files_under(tmp_path)) == 1
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


def test_spool_that_cannot_fit_fails_before_decoding(h264, tmp_path):
    huge = dataclasses.replace(probe_video(h264), frame_count=10**9)
    with ScheduledFrames(huge, 10**9 + 1, "pingpong", tmp_path) as frames:
        with pytest.raises(DiskFull):
            next(iter(frames))
    assert ffmpeg_children() == []


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_scheduled_frames_memory_does_not_grow_with_length(media, tmp_path):
    clip = lavfi_clip(media / "rss.mp4", size="320x240", seconds=8)  # 200 frames = 46 MB of BGR
    info = probe_video(clip)
    baseline = vm_rss_kib()
    peak = baseline
    with ScheduledFrames(info, 2 * info.frame_count, "pingpong", tmp_path) as frames:
        for n, (_, frame) in enumerate(frames):
            if n % 20 == 0:
                peak = max(peak, vm_rss_kib())
    assert (peak - baseline) < 20_000, f"RSS grew by {(peak - baseline) / 1024:.1f} MiB"


# --- writer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_kind", ["wav", "mp3", "video's track"])
def test_video_writer_output(audio_kind, tmp_path):
    audio_dir = tmp_path / "in"
    audio_dir.mkdir()
    if audio_kind == "wav":
        audio = sine(audio_dir / "声音 文件.wav", 1.23)
    elif audio_kind == "mp3":
        audio = sine(audio_dir / "voice.mp3", 1.23, "-c:a", "libmp3lame")
    else:
        audio = audio_dir / "with sound.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-f", "lavfi", "-i",
               "sine=frequency=300:duration=1.23", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
               "-shortest", str(audio))
        assert probe_video(audio).has_audio
    audio_duration = float(ffprobe_json(audio)["format"]["duration"])
    out = tmp_path / "输出 目录" / "讲话 视频 1.mp4"
    n = output_frame_count(audio_duration, FPS)
    written = list(presenter_frames(n / FPS, FPS, (W, H)))
    assert len(written) == n
    with VideoWriter(out, W, H, FPS, audio, audio_duration) as writer:
        for frame in written:
            writer.write(frame)
    assert sorted(os.listdir(out.parent)) == [out.name]  # no partial file left
    probe = ffprobe_json(out)
    (video,) = [s for s in probe["streams"] if s["codec_type"] == "video"]
    (sound,) = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert (video["codec_name"], video["pix_fmt"], sound["codec_name"]) == ("h264", "yuv420p", "aac")
    assert (video["width"], video["height"]) == (W, H)
    assert float(probe["format"]["duration"]) == pytest.approx(audio_duration, abs=1 / FPS)
    assert float(video["duration"]) == pytest.approx(audio_duration, abs=1 / FPS)
    names = [name for name, _, _ in top_level_atoms(out)]
    assert names.index("moov") < names.index("mdat")  # faststart
    # Colours survive the BGR -> yuv420p (BT.709) -> BGR round trip.
    back = list(read_frames(probe_video(out)))
    assert len(back) == n
    assert all(mad(a, b) < 4 for a, b in zip(back, written))
    bias = np.mean([(a.astype(np.int16) - b).mean(axis=(0, 1)) for a, b in zip(back, written)], axis=0)
    assert np.all(np.abs(bias) < 1.5), bias  # a BT.601/BT.709 mix-up shifts colours by 3-4 levels


def make_sine(directory: Path, seconds: float = 1.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return sine(directory / "tone.wav", seconds)


def test_video_writer_exception_leaves_nothing(tmp_path):
    audio = make_sine(tmp_path / "in")
    out = tmp_path / "out" / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, W, H, FPS, audio, 1.0) as writer:
            writer.write(np.zeros((H, W, 3), np.uint8))
            assert writer.temp_path.parent == out.parent and len(ffmpeg_children()) == 1
            raise RuntimeError("boom")
    assert os.listdir(out.parent) == []
    assert ffmpeg_children() == []


def test_video_writer_ffmpeg_failure_is_encode_error(tmp_path):
    audio = make_sine(tmp_path / "in")
    out = tmp_path / "out" / "result.mp4"
    with pytest.raises(EncodeError) as err:
        with VideoWriter(out, W, H, FPS, audio, 1.0, preset="no-such-preset") as writer:
            for _ in range(25):
                writer.write(np.zeros((H, W, 3), np.uint8))
    assert "result.mp4" in err.value.message and "preset" in err.value.message.lower()
    assert os.listdir(out.parent) == [] and ffmpeg_children() == []


def test_video_writer_audio_without_sound_is_named(h264, tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(NoAudioStream) as err:
        with VideoWriter(out, W, H, FPS, h264, 1.0) as writer:
            for _ in range(25):
                writer.write(np.zeros((H, W, 3), np.uint8))
    assert h264.name in err.value.message
    assert os.listdir(tmp_path) == []


def test_video_writer_rejects_bad_frames_and_sizes(tmp_path):
    audio = make_sine(tmp_path / "in")
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "odd.mp4", 161, 120, FPS, audio, 1.0)
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "x.mp4", W, H, FPS, audio, 1.0) as writer:
            writer.write(np.zeros((H, W + 2, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists() and ffmpeg_children() == []


def test_disk_full_messages_are_recognised():
    assert is_disk_full("av_interleaved_write_frame(): No space left on device")
    assert not is_disk_full("Invalid data found when processing input")


# --- poster, plain transcode -----------------------------------------------------------------------


def test_write_poster_scales_and_is_atomic(tmp_path):
    frame = next(presenter_frames(0.04, FPS, (320, 180)))
    poster = write_poster(frame, tmp_path / "海报 1.jpg", max_side=100)
    assert os.listdir(tmp_path) == ["海报 1.jpg"]
    image = cv2.imdecode(np.fromfile(poster, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (56, 100, 3)
    assert mad(image, cv2.resize(frame, (100, 56), interpolation=cv2.INTER_AREA)) < 6


def test_plain_transcode_matches_settings_and_audio_length(h264, tmp_path):
    audio = make_sine(tmp_path / "in", seconds=1.5)  # longer than the 1 s clip: the video loops
    out = plain_transcode(probe_video(h264), tmp_path / "out" / "plain.mp4", audio, 1.5, crf=23, preset="ultrafast")
    probe = ffprobe_json(out)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in probe["streams"])
    assert kinds == [("audio", "aac"), ("video", "h264")]
    assert float(probe["format"]["duration"]) == pytest.approx(1.5, abs=1 / FPS)
    assert os.listdir(out.parent) == ["plain.mp4"]
