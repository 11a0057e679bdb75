"""Each default is given once, in the settings model: the pipeline's keyword defaults are the settings' own."""

from __future__ import annotations

import inspect

from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.encode import VideoWriter, plain_transcode
from heygemd.pipeline.faces import track_faces
from heygemd.pipeline.probe import VideoInfo, probe_video
from heygemd.pipeline.run import RenderOptions
from heygemd.settings import EngineSettings, FacesSettings, VideoSettings


def defaults(fn: object) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()  # type: ignore[arg-type]
        if p.default is not inspect.Parameter.empty
    }


def test_pipeline_defaults_are_the_settings_defaults() -> None:
    assert RenderOptions().batch_size == EngineSettings().batch_size
    faces = FacesSettings()
    for name in ("pads", "smooth_window", "max_gap_frames", "detect_max_side", "select"):
        assert defaults(track_faces)[name] == getattr(faces, name), name
    video = VideoSettings()
    for fn in (VideoWriter, plain_transcode):
        for name in ("crf", "preset", "audio_bitrate"):
            assert defaults(fn)[name] == getattr(video, name), (fn, name)
    assert defaults(probe_video)["max_pixels"] == video.max_presenter_pixels
    assert VideoInfo.__dataclass_fields__["max_pixels"].default == video.max_presenter_pixels
    assert defaults(decode_audio)["max_seconds"] == video.max_audio_seconds
