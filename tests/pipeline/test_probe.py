"""Probing presenter files (heygemd.pipeline.probe) against the real ffprobe, with tiny media made on the spot."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.errors import (
    DecodeError,
    NotMedia,
    NotRegularFile,
    NoVideoStream,
    PictureTooLarge,
    PresenterTooLong,
    ToolMissing,
)
from heygemd.pipeline.ffmpeg_tools import find_tool
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video
from tests.pipeline.media import (
    FFMPEG,
    FPS,
    H,
    W,
    children_peak_rss_mb,
    ffmpeg,
    has_encoder,
    lavfi_clip,
    mad,
    not_regular_files,
    png_bomb,
    requires_ffmpeg,
    sine,
)

pytestmark = requires_ffmpeg


# --- tools -----------------------------------------------------------------------------------------


def test_find_tool_finds_ffmpeg_and_names_missing_tools():
    assert Path(find_tool("ffmpeg")).samefile(FFMPEG)
    with pytest.raises(ToolMissing) as err:
        find_tool("ffmpeg-that-does-not-exist")
    assert "ffmpeg-that-does-not-exist" in err.value.message
    assert "apt-get install ffmpeg" in err.value.hint


# --- probe -----------------------------------------------------------------------------------------


CODECS = {
    "h264": (("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"), "mp4", "h264", 8),
    "h264-10bit": (("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"), "mp4", "h264", 10),
    "hevc-10bit": (
        (
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
            "-pix_fmt",
            "yuv420p10le",
            "-tag:v",
            "hvc1",
        ),
        "mp4",
        "hevc",
        10,
    ),
    "vp9": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"), "webm", "vp9", 8),
}


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
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.5",
        "-f",
        "lavfi",
        "-i",
        "color=red:size=32x32:duration=1",
        "-map",
        "0",
        "-map",
        "1",
        "-c:a",
        "libmp3lame",
        "-c:v",
        "png",
        "-frames:v",
        "1",
        "-disposition:v",
        "attached_pic",
        str(cover),
    )
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


def test_trimmed_copy_with_edit_list_counts_shown_frames(media):
    long = lavfi_clip(media / "long.mp4", seconds=3)
    trimmed = media / "trimmed.mp4"
    ffmpeg("-ss", "0.5", "-i", str(long), "-c", "copy", str(trimmed))  # keeps hidden pre-roll samples
    info = probe_video(trimmed)
    assert info.frame_count == pytest.approx(2.5 * FPS, abs=1)
    assert len(list(read_frames(info))) == info.frame_count


# --- hostile presenters ----------------------------------------------------------------------------


def test_a_presenter_longer_than_the_limit_is_refused_from_its_header(media):
    clip = lavfi_clip(media / "anna.mp4", seconds=2)
    with pytest.raises(PresenterTooLong) as err:
        probe_video(clip, max_seconds=1.5)
    assert err.value.code == "PRESENTER_TOO_LONG"
    assert err.value.message == f"{clip}: the video lasts 2 s; presenters of at most 1.5 s are taken"
    assert err.value.hint == (
        "Cut it to the part you need (e.g. ffmpeg -i anna.mp4 -t 1.5 -c copy anna-cut.mp4), "
        "or raise video.max_presenter_seconds."
    )
    assert probe_video(clip, max_seconds=2.0).frame_count == 2 * FPS  # at the limit: taken


def test_a_picture_bomb_is_refused_from_its_header_without_being_decoded(media):
    bomb = png_bomb(media / "bob.png", 16000, 16000)  # 0.7 MB declaring 256 megapixels (768 MB decoded)
    with pytest.raises(PictureTooLarge) as err:
        probe_video(bomb)
    assert err.value.code == "PICTURE_TOO_LARGE"
    assert err.value.message == (
        f"{bomb}: the picture is about 16000x16000; presenters of at most 40,000,000 pixels are taken"
    )
    assert err.value.hint == (
        "Scale it down to at most 6324x6324, e.g. ffmpeg -i bob.png -vf scale=6324:-2 bob-smaller.png "
        "(or raise video.max_presenter_pixels)."
    )
    probe = "import sys, contextlib\nfrom heygemd.pipeline.probe import probe_video\n"
    probe += "with contextlib.suppress(Exception):\n    probe_video(sys.argv[1])"
    assert children_peak_rss_mb(probe, str(bomb)) < 200  # decoded, it took 800 MB in ffprobe alone


@pytest.mark.parametrize("suffix", ["mp4", "png", "jpg"])
def test_a_presenter_over_the_pixel_limit_is_refused_and_one_at_the_limit_taken(media, suffix):
    clip = media / f"limit.{suffix}"
    encode = (
        ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p") if suffix == "mp4" else ("-frames:v", "1")
    )
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:duration=1", *encode, str(clip))
    with pytest.raises(PictureTooLarge) as err:
        probe_video(clip, max_pixels=W * H - 1)
    assert err.value.message == (
        f"{clip}: the picture is {W}x{H}, {W * H:,} pixels; presenters of at most {W * H - 1:,} pixels are taken"
    )
    assert probe_video(clip, max_pixels=W * H).width == W


def test_a_presenter_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path):
    for path, what in not_regular_files(tmp_path):
        with pytest.raises(NotRegularFile) as err:
            probe_video(path)
        assert err.value.code == "NOT_A_FILE"
        assert err.value.message == f"{path}: {what}"
