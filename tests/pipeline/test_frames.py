"""Frames in (heygemd.pipeline.frames) against the real ffmpeg, with tiny media made on the spot."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import presenter_video
from heygemd.errors import DiskFull, PictureTooLarge
from heygemd.pipeline.colour import BT709_TV, YuvMatrix, yuv420p_bytes, yuv420p_to_bgr
from heygemd.pipeline.frames import ScheduledFrames, frame_schedule, read_frames
from heygemd.pipeline.probe import DecodedYuv, probe_video
from tests.pipeline.media import (
    FFMPEG,
    FPS,
    H,
    W,
    ffmpeg,
    ffmpeg_children,
    ffprobe_json,
    grainy_clip,
    has_encoder,
    lavfi_clip,
    lavfi_reference,
    mad,
    requires_ffmpeg,
)

pytestmark = requires_ffmpeg


# --- helpers ---------------------------------------------------------------------------------------


def open_files_under(directory: Path) -> list[str]:
    targets = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if t.startswith(str(directory))]


# --- read ------------------------------------------------------------------------------------------


def test_odd_size_is_cropped_to_even(media):
    clip = lavfi_clip(
        media / "odd.mp4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        size="322x242",
        vf="format=yuv444p,crop=321:241:0:0",
    )  # testsrc2 itself only makes even sizes
    assert (ffprobe_json(clip)["streams"][0]["width"], ffprobe_json(clip)["streams"][0]["height"]) == (321, 241)
    info = probe_video(clip)
    assert (info.width, info.height) == (320, 240)
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count == FPS
    reference = lavfi_reference(size="322x242")
    assert frames[5].shape == (240, 320, 3)
    assert mad(frames[5], reference[5][:240, :320]) < 10


def test_non_square_pixels_are_delivered_square(media):
    """A 240x180 picture with 4:3 pixels shows as 320x180 in a player: deliver it so, or the face is squashed."""
    clip = lavfi_clip(
        media / "anamorphic.mp4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        size="240x180",
        vf="setsar=4/3",
    )
    info = probe_video(clip)
    assert (info.width, info.height) == (320, 180)
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count and frames[0].shape == (180, 320, 3)
    reference = lavfi_reference(size="240x180")
    stretched = cv2.resize(reference[5], (320, 180), interpolation=cv2.INTER_LINEAR)
    assert mad(frames[5], stretched) < 12


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
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={W}x{H}:rate=25:duration=2,select='not(between(n,10,19))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        str(clip),
    )
    info = probe_video(clip)
    assert info.is_vfr
    assert info.fps == 20.0
    assert info.frame_count == round(info.duration * info.fps) == 40
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count
    # Which stored frame each delivered frame shows: in time order, with the stall held, not squeezed out.
    assert info.yuv is not None  # the stored frames are converted as read_frames converts them
    decoded = subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-i",
            str(clip),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    stored = []
    for yuv in np.frombuffer(decoded, np.uint8).reshape(-1, yuv420p_bytes(W, H)):
        stored.append(np.empty((H, W, 3), np.uint8))
        yuv420p_to_bgr(yuv, W, H, info.yuv.matrix, stored[-1])
    shown = []
    for frame in frames:
        (best, index), (second, _) = sorted((mad(frame, s), i) for i, s in enumerate(stored))[:2]
        assert best == 0 < second  # one stored frame, not a blend
        shown.append(index)
    assert shown[0] == 0 and shown[-1] == len(stored) - 1
    assert shown == sorted(shown)
    assert max(shown.count(i) for i in set(shown)) >= 4  # frame 9 is held for the 0.4 s stall


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


def test_hdr_input_is_tone_mapped_to_8bit(media, reference):
    if not has_encoder("libx265"):
        pytest.skip("this ffmpeg has no libx265 encoder")
    clip = lavfi_clip(
        media / "hdr.mp4",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error",
        "-pix_fmt",
        "yuv420p10le",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
    )
    info = probe_video(clip)
    assert info.hdr and info.bit_depth == 10
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count == FPS
    assert 40 < frames[0].mean() < 220 and frames[0].std() > 20  # a picture, neither blank nor clipped


def test_read_frames_pads_to_frame_count_and_truncates(h264):
    info = probe_video(h264)
    stored = list(read_frames(info))
    longer = list(read_frames(dataclasses.replace(info, frame_count=info.frame_count + 2)))
    assert len(longer) == info.frame_count + 2
    assert np.array_equal(longer[-1], stored[-1]) and np.array_equal(longer[-2], stored[-1])
    shorter = list(read_frames(dataclasses.replace(info, frame_count=10)))
    assert len(shorter) == 10 and all(np.array_equal(a, b) for a, b in zip(shorter, stored, strict=False))


def test_padding_frames_reach_the_yuv_sink_too(h264):
    """The yuv frames handed on match the BGR frames one for one, the repeated last frame included."""
    info = dataclasses.replace(probe_video(h264), frame_count=probe_video(h264).frame_count + 2)
    assert info.yuv is not None
    handed: list[np.ndarray] = []
    frames = list(read_frames(info, yuv_sink=lambda yuv: handed.append(yuv.copy())))
    assert len(handed) == len(frames) == info.frame_count
    for yuv, frame in zip(handed, frames, strict=True):
        converted = np.empty_like(frame)
        yuv420p_to_bgr(yuv, info.width, info.height, info.yuv.matrix, converted)
        assert np.array_equal(converted, frame)
    assert np.array_equal(handed[-1], handed[-3])


def test_a_stream_that_grows_past_the_pixel_limit_midway_is_not_decoded_at_its_new_size(media, tmp_path):
    """The header says 160x120; halfway the stream switches to 640x480. The decoder keeps the probe's limit."""
    joined = tmp_path / "joined.h264"
    with joined.open("wb") as out:
        for size in (f"{W}x{H}", f"{4 * W}x{4 * H}"):
            part = tmp_path / f"{size}.h264"
            ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:duration=0.4", "-c:v", "libx264", "-bf", "0", str(part))
            out.write(part.read_bytes())
    clip = media / "grows.mp4"
    ffmpeg("-r", str(FPS), "-i", str(joined), "-c", "copy", str(clip))
    info = probe_video(clip, max_pixels=2 * W * H)
    assert (info.width, info.height, info.frame_count) == (W, H, 20)
    with pytest.raises(PictureTooLarge) as err:
        list(read_frames(info))
    assert err.value.message == (
        f"{clip}: the picture is about {4 * W}x{4 * H}; presenters of at most {2 * W * H:,} pixels are taken"
    )
    assert ffmpeg_children() == []


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
    steps = [b - a for a, b in zip(schedule, schedule[1:], strict=False)]
    if mode == "pingpong":
        assert all(abs(s) == 1 for s in steps)  # never a repeated frame, never a jump
        turns = [schedule[i] for i in range(1, n_out - 1) if steps[i - 1] != steps[i]]
        assert set(turns) <= {0, n_source - 1}
    else:
        assert all(
            s == 1 or (a, b) == (n_source - 1, 0) for s, a, b in zip(steps, schedule, schedule[1:], strict=False)
        )


def test_frame_schedule_examples_and_errors():
    assert list(frame_schedule(4, 11, "pingpong")) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert list(frame_schedule(3, 7, "loop")) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        frame_schedule(0, 3, "loop")
    with pytest.raises(ValueError):
        frame_schedule(3, 3, "bounce")  # type: ignore[arg-type]


# --- scheduled frames with spool -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pingpong", "loop"])
@pytest.mark.parametrize("codec", ["raw", "x264", "ffv1", "utvideo"])
def test_scheduled_frames_replay_bitwise_and_remove_spool(mode, codec, media, tmp_path):
    clip = presenter_video(media / f"presenter {mode} {codec}.mp4", seconds=0.4, size=(W, H))
    info = probe_video(clip)
    forward = list(read_frames(info))
    n_out = 3 * info.frame_count
    work = tmp_path / "work"
    expected = list(frame_schedule(info.frame_count, n_out, mode))
    got = []
    with ScheduledFrames(info, n_out, mode, work, codec=codec) as frames:
        assert frames.needs_spool and len(frames) == n_out
        for index, frame in frames:
            frame[0, 0] = 255 - frame[0, 0]  # consumers may draw on frames; the spool must not see it
            frame[0, 0] = 255 - frame[0, 0]
            got.append((index, frame))
            if len(got) == n_out - 1:
                assert os.listdir(work) == []  # the spool is never visible by name...
                assert len(open_files_under(work)) == 1  # ...but lives in work_dir
                if codec == "raw":
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


def test_abandoned_yuv_spool_stops_decoder_and_encoder_and_frees_spool(h264, tmp_path):
    """Leaving mid-way through the forward pass of a yuv-fed spool kills the decoder (both its pipes closed) and
    the spool's encoder, and frees the spool file."""
    info = probe_video(h264)
    descriptors = set(os.listdir("/proc/self/fd"))
    with ScheduledFrames(info, 100, "pingpong", tmp_path, codec="x264") as frames:
        iterator = iter(frames)
        for _ in range(5):
            next(iterator)
        assert len(ffmpeg_children()) >= 1 and len(open_files_under(tmp_path)) == 1
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []
    assert set(os.listdir("/proc/self/fd")) <= descriptors  # the yuv pipe is closed too


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
        for n, _ in enumerate(frames):
            if n % 20 == 0:
                peak = max(peak, vm_rss_kib())
    assert (peak - baseline) < 20_000, f"RSS grew by {(peak - baseline) / 1024:.1f} MiB"


@pytest.mark.parametrize("codec", ["x264", "ffv1", "utvideo"])
def test_lossless_spool_size_bound(codec, media, tmp_path):
    """The ping-pong spool of the 720p demo presenter (H.264 decoded) stays far below its raw size: x264 and ffv1
    within 15 % (about 7 % and 9 %), utvideo within 25 %."""
    clip = presenter_video(media / f"spool size {codec}.mp4", seconds=0.8, size=(1280, 720))
    info = probe_video(clip)
    raw = info.frame_count * info.frame_bytes
    bound = {"x264": 0.15, "ffv1": 0.15, "utvideo": 0.25}[codec]
    with ScheduledFrames(info, 2 * info.frame_count, "pingpong", tmp_path, codec=codec) as frames:
        for n, _ in enumerate(frames):
            if n == info.frame_count:  # the forward pass is spooled, the first backward frame read
                size = frames.spool_bytes
    assert 0 < size <= bound * raw, f"spool {size / raw:.1%} of raw"
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


def spooled_run(info, work, codec):
    """Every output frame of a ping-pong twice the video's length, and the spool's size after the forward pass."""
    got, size = [], 0
    with ScheduledFrames(info, 2 * info.frame_count, "pingpong", work, codec=codec) as frames:
        for n, item in enumerate(frames):
            got.append(item)
            if n == info.frame_count:  # the forward pass is spooled, the first backward frame read
                size = frames.spool_bytes
    return got, size


def test_spool_of_grainy_camera_footage_stays_within_15_percent_bit_exact(media, tmp_path):
    """Issue 11's target on footage with sensor grain (sigma 5, kept in part by a phone-like CRF 20): the default
    x264 spool of 360p (the resolution that compresses least) takes at most 15 % of the raw frames (about 13 %),
    and the backward frames are the forward frames bit for bit."""
    info = probe_video(grainy_clip(media / "grainy 360p.mp4", size=(640, 360), frames=20, sigma=5, crf=20))
    assert info.yuv == DecodedYuv("yuv420p", BT709_TV)  # the decoder's frames are spooled
    forward = list(read_frames(info))
    got, size = spooled_run(info, tmp_path, "x264")
    raw = info.frame_count * info.frame_bytes
    assert 0 < size <= 0.15 * raw, f"spool {size / raw:.1%} of raw"
    assert all(np.array_equal(frame, forward[i]) for i, frame in got)
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


def test_spool_of_extreme_grain_turns_near_lossless_and_stays_within_15_percent(media, tmp_path):
    """Sigma 8 grain kept by CRF 18 takes ~24 % of raw even losslessly: after its first segment the x264 spool
    encodes near-losslessly (NEAR_LOSSLESS_QP), so five segments stay within the 15 % target. The first segment's
    frames come back exact, the rest within a few levels of the forward frames."""
    from heygemd.pipeline import spool

    info = probe_video(grainy_clip(media / "extreme grain 360p.mp4", size=(640, 360), frames=160, sigma=8, crf=18))
    assert spool.segment_frames(info.width * info.height * 3 // 2) == 32  # five segments
    forward = list(read_frames(info))
    got, size = spooled_run(info, tmp_path, "x264")
    raw = info.frame_count * info.frame_bytes
    assert 0 < size <= spool.TARGET_RATIO * raw, f"spool {size / raw:.1%} of raw"
    backward = got[info.frame_count :]
    errors = {i: np.abs(frame.astype(np.int16) - forward[i]) for i, frame in backward}
    assert all(errors[i].max() == 0 for i in errors if i < 32)  # the first segment: lossless
    assert 0 < max(e.mean() for e in errors.values()) < 1.5 and max(e.max() for e in errors.values()) <= 24
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


@pytest.mark.parametrize(
    "tags",
    [(), ("-colorspace", "smpte170m", "-color_range", "pc"), ("-colorspace", "bt709", "-color_range", "tv")],
    ids=["untagged", "bt601-full", "bt709-limited"],
)
@pytest.mark.parametrize("codec", ["x264", "ffv1", "utvideo"])
def test_yuv_spool_converts_back_with_the_decoders_colour_tags(codec, tags, media, tmp_path):
    """The BGR conversion depends on the matrix and range the frames are tagged with: the spool's 4:2:0 frames
    are tagged like the decoder's (full range: yuvj420p, stored unconverted), so saturated colours (testsrc2)
    come back exactly for every tagging."""
    h264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *tags)
    info = probe_video(lavfi_clip(media / f"tagged {'-'.join(tags) or 'none'}.mp4", *h264, seconds=0.6))
    assert info.yuv is not None
    forward = list(read_frames(info))
    got, size = spooled_run(info, tmp_path, codec)
    assert 0 < size < info.frame_count * info.frame_bytes
    assert [i for i, _ in got] == list(frame_schedule(info.frame_count, 2 * info.frame_count, "pingpong"))
    assert all(np.array_equal(frame, forward[i]) for i, frame in got)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ((), YuvMatrix(0.299, 0.114, False)),
        (("-colorspace", "smpte170m", "-color_range", "pc"), YuvMatrix(0.299, 0.114, True)),
        (("-colorspace", "bt709", "-color_range", "tv"), BT709_TV),
    ],
    ids=["untagged", "bt601-full", "bt709-limited"],
)
def test_4_2_0_frames_are_converted_here_with_their_tags_as_ffmpeg_would(tags, expected, media):
    """8-bit 4:2:0 video is read as the decoder's own frames and converted with the matrix and range of their tags
    (BT.601 when untagged); the result is ffmpeg's own conversion but for chroma interpolation at colour edges."""
    info = probe_video(grainy_clip(media / f"converted {'-'.join(tags) or 'none'}.mp4", frames=4, sigma=0, tags=tags))
    assert info.yuv is not None and info.yuv.matrix == expected
    assert info.yuv.pix_fmt == ("yuvj420p" if expected.full_range else "yuv420p")
    ours = list(read_frames(info))
    by_ffmpeg = list(read_frames(dataclasses.replace(info, yuv=None)))
    assert len(ours) == len(by_ffmpeg) == info.frame_count
    assert max(mad(a, b) for a, b in zip(ours, by_ffmpeg, strict=True)) < 1.5
    with pytest.raises(ValueError, match="yuv_sink"):
        next(read_frames(dataclasses.replace(info, yuv=None), yuv_sink=lambda frame: None))


@pytest.mark.parametrize("codec", ["x264", "ffv1", "utvideo"])
def test_spool_of_a_source_that_is_not_yuv420p_takes_bgr_and_stays_exact(codec, media, tmp_path):
    """4:4:4 (or 10-bit, HDR, non-square pixels) frames are not the decoder's yuv420p: the spool takes the BGR
    frames instead (ffv1 for the x264 spool), still bit exact."""
    h264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p")
    info = probe_video(lavfi_clip(media / f"444 {codec}.mp4", *h264, seconds=0.6))
    assert info.yuv is None
    forward = list(read_frames(info))
    got, size = spooled_run(info, tmp_path, codec)
    assert 0 < size < info.frame_count * info.frame_bytes
    assert all(np.array_equal(frame, forward[i]) for i, frame in got)


@pytest.mark.parametrize("codec", ["x264", "ffv1"])
def test_spool_stops_with_disk_full_before_the_disk_fills(codec, media, tmp_path, monkeypatch):
    """Free space is checked before every segment: when it runs low mid-video the spool stops with DiskFull
    (no ENOSPC half-way through a write), kills its encoder and frees its file."""
    from heygemd.pipeline import spool

    info = probe_video(lavfi_clip(media / f"three segments {codec}.mp4", seconds=3))  # 75 small frames: 3 segments
    checks = []
    real_free = spool.free_bytes

    def shrinking(directory):
        checks.append(directory)
        return real_free(directory) if len(checks) <= 2 else 1000  # the expected size and 1st segment fit

    monkeypatch.setattr(spool, "free_bytes", shrinking)
    with ScheduledFrames(info, 3 * info.frame_count, "pingpong", tmp_path, codec=codec) as frames:
        with pytest.raises(DiskFull) as error:
            for _ in frames:
                pass
    assert "spool" in error.value.message and error.value.hint
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


@pytest.mark.parametrize("codec", ["x264", "utvideo"])
def test_codec_spool_that_cannot_fit_fails_before_decoding(codec, h264, tmp_path):
    huge = dataclasses.replace(probe_video(h264), frame_count=10**8)
    with ScheduledFrames(huge, 10**8 + 1, "pingpong", tmp_path, codec=codec) as frames:
        with pytest.raises(DiskFull):
            next(iter(frames))
    assert ffmpeg_children() == [] and open_files_under(tmp_path) == []


@pytest.mark.gpu
def test_nvdec_decoded_spool_replays_its_forward_frames_exactly(media, tmp_path):
    """With NVDEC the decoder's frames come back as NV12 and are made yuv420p before they are handed over: the
    backward frames must still be the forward frames of that same decode, bit for bit."""
    from heygemd.pipeline import hw_codecs

    if not hw_codecs.nvdec_works():
        pytest.skip("needs NVDEC")
    info = probe_video(grainy_clip(media / "grainy nvdec.mp4", size=(1280, 720), frames=12))
    with ScheduledFrames(info, 2 * info.frame_count, "pingpong", tmp_path, codec="x264", decoder="nvdec") as frames:
        got = list(frames)
    forward = dict(got[: info.frame_count])
    assert all(np.array_equal(frame, forward[i]) for i, frame in got[info.frame_count :])


def test_spool_of_a_vfr_stall_replays_its_repeated_frames_exactly(media, tmp_path):
    """A camera stall in a VFR video makes the fps filter repeat one frame 8 times: each repeat reaches the spool,
    and the backward frames are the forward frames, bit for bit."""
    clip = media / "vfr stall 360p.mp4"
    stall = "testsrc2=size=640x360:rate=25:duration=1.6,select='not(between(n,10,19))'"
    ffmpeg("-f", "lavfi", "-i", stall, "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", str(clip))
    info = probe_video(clip)
    assert info.is_vfr and info.yuv is not None
    forward = list(read_frames(info))
    got, _ = spooled_run(info, tmp_path, "x264")
    assert len(got) == 2 * info.frame_count
    assert all(np.array_equal(frame, forward[i]) for i, frame in got)
