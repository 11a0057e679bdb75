"""A warm lip-sync session: one engine and one face detector, reused for every video it renders.

Both the one-shot commands (``single``, ``batch``) and the daemon's worker render through this class,
so a video renders the same whichever way it came in. The engine comes from the registry
(``heygemd.engines.registry``) and is handed to the pipeline, which knows it only by its contract.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from heygemd.engines import available_names, check_installed, resolve, torch_device_name
from heygemd.engines.registry import EngineParameters
from heygemd.fsutil import InputFile
from heygemd.pipeline import faces
from heygemd.pipeline.audio import SAMPLE_RATE, AudioFeatures, decode_audio, features_from_samples, wav2lip_mel
from heygemd.pipeline.engine_contract import Engine, PromptEngine
from heygemd.pipeline.ffmpeg_tools import open_input
from heygemd.pipeline.run import ProgressCallback, RenderOptions, RenderResult, render_video
from heygemd.settings import EngineSettings, FaceChoice, Settings


class LipSyncSession:
    """Holds the engine and detector warm between videos and jobs; load lazily, release between jobs."""

    def __init__(self, settings: Settings, engine_name: str | None = None):
        """``engine_name``: an engine a job asks for (EngineNotInstalled when its files are missing); None or
        ``auto``: the settings' engine."""
        self.settings = settings
        if engine_name not in (None, "auto"):
            check_installed(engine_name, settings.engine, settings.paths.models)
        self.spec = resolve(settings.engine, settings.paths.models, engine_name)
        self.engine_name = self.spec.name
        self._engine: Engine | None = None
        self._detector: faces.FaceDetector | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.spec.load(self.settings.engine, self.settings.paths.models)
        return self._engine

    @property
    def detector(self) -> faces.FaceDetector:
        if self._detector is None:
            self._detector = faces.make_detector(
                self.settings.faces.detector,
                self.settings.paths.models,
                self.settings.paths.cache_dir,
                device=self.settings.engine.device,
                resolve_device=torch_device_name,
            )
        return self._detector

    def installed(self) -> tuple[str, ...]:
        """The engines installed here (their files are there), in ``auto``'s order, this session's own included."""
        names = available_names(self.settings.engine, self.settings.paths.models)
        return names if self.engine_name in names else (self.engine_name, *names)

    def alternatives(self) -> tuple[str, ...]:
        """The other engines installed here (their files are there), in ``auto``'s order: what a retry may use."""
        return tuple(name for name in self.installed() if name != self.engine_name)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def warm_up(self) -> None:
        """Load the engine, the detector and the audio maths now (the daemon does this before READY).

        The first mel spectrogram of a process builds the mel bank and numpy's FFT plan; doing it on a tenth
        of a second of silence here keeps that out of the first job.
        """
        _ = self.engine, self.detector
        wav2lip_mel(np.zeros(SAMPLE_RATE // 10, dtype=np.float32))

    def configure(self, overrides: Mapping[str, object] | None = None) -> EngineParameters:
        """Set the engine settings a job changes (``JobOptions.engine_settings``; none: the daemon's own) on the
        engine for the renders that follow, and return the parameters that shape its pictures besides the
        weights, for status.json (empty for an engine without any; such an engine is not loaded here)."""
        if self.spec.configure is None:
            return {}
        settings = EngineSettings.model_validate({**self.settings.engine.model_dump(), **(overrides or {})})
        return self.spec.configure(self.engine, settings)

    def audio(self, source: Path | InputFile, *, should_stop: Callable[[], bool] | None = None) -> AudioFeatures:
        """Decode ``source`` once and compute the features every video of a job shares: the Wav2Lip mel, and
        the engine's own features (MuseTalk: Whisper prompts) when it needs them. An open ``InputFile`` stays
        the features' source: each video's sound is muxed from its descriptor. At most
        ``video.max_audio_seconds`` are decoded; ``should_stop`` is polled while decoding (Interrupted)."""
        limit = self.settings.video.max_audio_seconds
        wav = decode_audio(source, SAMPLE_RATE, max_seconds=limit, should_stop=should_stop)
        features = features_from_samples(source, wav)
        if self.spec.needs().audio == "mel":
            return features  # the engine is loaded by the first render, not here
        engine = self.engine
        if isinstance(engine, PromptEngine):
            features = dataclasses.replace(features, prompts=engine.encode_audio(wav))
        return features

    def render(
        self,
        video: Path | InputFile,
        audio: AudioFeatures,
        output: Path,
        *,
        loop_mode: str | None = None,
        crf: int | None = None,
        face: FaceChoice | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        before_publish: Callable[[], None] | None = None,
    ) -> RenderResult:
        """Render ``video`` with ``audio`` into ``output``; ``loop_mode``, ``crf`` and ``face`` (which face to follow)
        override the settings; ``before_publish`` runs before the output is put in place (``render_video``)."""
        options = self.options(loop_mode=loop_mode, crf=crf, face=face)
        # a path is opened once here, for every step of the render; the ping-pong spool is an anonymous file in
        # the temp folder: nothing is left behind, even after SIGKILL
        with open_input(video) as source:
            return render_video(
                source,
                audio,
                output,
                self.engine,
                self.detector,
                options=options,
                cache_dir=self.settings.paths.cache_dir,
                work_dir=Path(tempfile.gettempdir()),
                on_progress=on_progress,
                should_stop=should_stop,
                before_publish=before_publish,
            )

    def options(
        self, *, loop_mode: str | None = None, crf: int | None = None, face: FaceChoice | None = None
    ) -> RenderOptions:
        """What shapes a render (and a presenter's preparation) here: the settings, with a job's or a presenter's
        own loop mode, quality and face."""
        faces_settings = self.settings.faces
        if face is not None:
            faces_settings = faces_settings.model_copy(update={"select": face})
        return RenderOptions(
            video=self.settings.video,
            faces=faces_settings,
            loop_mode=loop_mode,  # type: ignore[arg-type]
            crf=crf,
            batch_size=self.settings.engine.batch_size,
            presenter_cache_gb=self.settings.engine.presenter_cache_gb,
        )

    def release(self) -> None:
        """Free cached accelerator memory (between jobs); the model stays loaded."""
        if self._engine is not None:
            self._engine.release()

    def unload(self) -> None:
        """Drop the model entirely (after the idle timeout); the next render loads it again."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
