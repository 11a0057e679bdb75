"""A warm session renders many videos; a presenter reused with a new audio skips face detection."""

from __future__ import annotations

from pathlib import Path

from heygemd.demo import presenter_video, speech_wav
from heygemd.lipsync import LipSyncSession
from heygemd.settings import EngineSettings, PathsSettings, Settings


def test_a_presenter_reused_with_another_audio_skips_detection(tmp_path: Path) -> None:
    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp"),
    )
    session = LipSyncSession(settings)
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=1.0, size=(320, 180))
    first = speech_wav(tmp_path / "one.wav", sentences=("One.",), pause_seconds=0.1, lead_seconds=0.1)
    second = speech_wav(tmp_path / "two.wav", sentences=("Two, three.",), pause_seconds=0.1, lead_seconds=0.1)

    a = session.render(presenter, session.audio(first), tmp_path / "out" / "a.mp4")
    b = session.render(presenter, session.audio(second), tmp_path / "out" / "b.mp4")
    assert not a.cached_faces and a.timings["detect"] > 0
    assert b.cached_faces and b.timings["detect"] == 0.0
    assert b.face_ratio == a.face_ratio == 1.0
    assert list((tmp_path / "inbox" / ".heygemd" / "cache" / "faces").glob("*.npz"))


def test_an_interrupted_render_leaves_neither_video_nor_poster(tmp_path: Path) -> None:
    import pytest

    from heygemd.errors import Interrupted

    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp", batch_size=4),
    )
    session = LipSyncSession(settings)
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=1.0, size=(320, 180))
    speech = session.audio(
        speech_wav(tmp_path / "s.wav", sentences=("Hello there.",), pause_seconds=0.1, lead_seconds=0.1)
    )
    rendered: list[int] = []

    def stop_late() -> bool:  # after most frames, the loudest one (the poster) included, are written
        return len(rendered) > 0 and rendered[-1] >= speech.frame_count(25.0) - 4

    out = tmp_path / "out" / "anna.mp4"
    out.parent.mkdir()
    with pytest.raises(Interrupted):
        session.render(
            presenter,
            speech,
            out,
            should_stop=stop_late,
            on_progress=lambda p: rendered.append(p.frames_done) if p.stage == "render" else None,
        )
    assert rendered and rendered[-1] > int(speech.loudness(25.0).argmax())  # the poster frame had been rendered
    assert list(out.parent.iterdir()) == []  # no video, no poster, no partial file


def test_no_face_says_photo_for_a_photo_and_video_for_a_video(tmp_path: Path) -> None:
    import pytest

    from heygemd.errors import NoFace
    from tests.pipeline.media import ffmpeg, lavfi_clip

    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp"),
    )
    session = LipSyncSession(settings)
    speech = session.audio(speech_wav(tmp_path / "s.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1))
    photo = tmp_path / "pattern.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180", "-frames:v", "1", str(photo))
    video = lavfi_clip(tmp_path / "pattern.mp4", size="320x180", seconds=1)

    with pytest.raises(NoFace) as on_photo:
        session.render(photo, speech, tmp_path / "out" / "photo.mp4")
    assert "no face was found in the photo" in on_photo.value.message
    assert on_photo.value.hint.startswith("Use a photo where") and "video" not in on_photo.value.hint
    with pytest.raises(NoFace) as on_video:
        session.render(video, speech, tmp_path / "out" / "video.mp4")
    assert "of the frames" in on_video.value.message and on_video.value.hint.startswith("Use a video where")


def test_the_limits_of_the_settings_hold_for_every_render(tmp_path: Path) -> None:
    import pytest

    from heygemd.errors import AudioTooLong, PictureTooLarge, PresenterTooLong
    from heygemd.settings import VideoSettings

    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp"),
        video=VideoSettings(max_presenter_pixels=320 * 180 - 1, max_audio_seconds=0.5),
    )
    session = LipSyncSession(settings)
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=1.0, size=(320, 180))
    speech = speech_wav(tmp_path / "one.wav", sentences=("One.",), pause_seconds=0.1, lead_seconds=0.1)
    with pytest.raises(AudioTooLong, match="a job takes at most 0:00:00.5 of audio"):
        session.audio(speech)
    audio = LipSyncSession(settings.model_copy(update={"video": VideoSettings()})).audio(speech)
    with pytest.raises(PictureTooLarge, match="the picture is 320x180, 57,600 pixels"):
        session.render(presenter, audio, tmp_path / "out" / "anna.mp4")
    # a job's own video is held to the presenter length too (its face is tracked in every frame), from its header
    short = LipSyncSession(settings.model_copy(update={"video": VideoSettings(max_presenter_seconds=0.9)}))
    with pytest.raises(PresenterTooLong, match="the video lasts 1 s; presenters of at most 0.9 s are taken"):
        short.render(presenter, audio, tmp_path / "out" / "anna.mp4")
    assert not (tmp_path / "out").exists()
