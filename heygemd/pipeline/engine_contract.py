"""The engine contract: the one interface every lip-sync engine implements, owned by the pipeline that calls it.

Engines (``heygemd.engines``) import this module and implement it; the pipeline never imports an engine: it is
handed one (``run.render_video``) and reads only the attributes below, never an engine's name.

An engine gets a batch of face crops (cut from each frame by the engine's crop rule, any size), the 68 facial
landmarks of each crop in crop coordinates, and the audio features it asked for for each frame. It returns one
image per crop, the same size as the crop, with the mouth re-rendered for that audio window.
Pasting the result back into the frame (with a feathered mouth mask, or the aligned face's feathered rectangle) is
the crop rule's job (``pipeline.crops``).

What an engine needs is declared in its ``needs`` (``EngineNeeds``): which audio features (the Wav2Lip mel,
which every job computes, or Whisper prompts, which a ``PromptEngine`` computes once per job), which crop
rule, whether its output is colour-matched to the frame, whether it keeps a per-presenter preparation
(a ``PresenterEngine``: e.g. VAE latents of every source frame, cached by video content), and whether the footage
checks of ``pipeline.footage`` apply to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from heygemd.pipeline.mouth import MouthState

AudioNeed = Literal["mel", "whisper"]
CropRule = Literal["track", "musetalk_v15", "latentsync_affine"]


@dataclass(frozen=True)
class EngineNeeds:
    audio: AudioNeed = "mel"
    """``mel``: the Wav2Lip mel windows only; ``whisper``: also per-frame prompts from ``PromptEngine.encode_audio``."""
    crop: CropRule = "track"
    """``track``: the tracked (padded, smoothed) face box; ``musetalk_v15``: MuseTalk 1.5's landmark box;
    ``latentsync_affine``: the 512x512 face aligned by a similarity transform (``pipeline.align``), pasted back as
    a whole feathered rectangle (the engine keeps what it does not redraw itself). See ``pipeline.crops``."""
    colour_match: bool = False
    """Match the generated crop's colours to the frame inside the mask before pasting."""
    presenter_prep: bool = False
    """The engine is a ``PresenterEngine``: per-frame preparation computed once per video and cached."""
    footage_warnings: bool = False
    """The engine moves the mouth it sees (it draws none): ``footage.footage_warnings`` reports footage where it
    cannot make a credible one (a covered mouth, a profile view, a tiny face)."""
    window: int = 1
    """Consecutive output frames the engine must receive together (LatentSync: 16, for its temporal layers).
    Windows start at the first frame, every ``window`` frames with a face, and again after each frame without
    one; a render batch holds whole windows, and ``FaceBatch.windows`` says where they are."""


class FrameFeatures(Protocol):
    """Per-frame audio conditioning of one recording, computed once per job (e.g. Whisper prompts)."""

    def windows(self, fps: float, start: int, stop: int) -> np.ndarray:
        """The features of frames ``start..stop-1`` at ``fps``, one row per frame."""
        ...

    def close(self) -> None:
        """Free what the features hold (memory, a backing file)."""
        ...


@dataclass(frozen=True)
class FaceBatch:
    crops: list[np.ndarray]
    """BGR uint8 crops of the face box, each (h, w, 3); sizes may differ within a batch."""
    landmarks: list[np.ndarray]
    """(68, 2) float32 landmarks per crop, in crop pixel coordinates (iBUG 68-point layout)."""
    mels: np.ndarray
    """(B, 80, 16) float32 Wav2Lip mel windows, one per crop."""
    masks: list[np.ndarray] | None = None
    """float32 (h, w) ``render.mouth_mask`` per crop when the caller has them: the region the result is pasted
    back with. An engine that edits pixels itself reuses them instead of computing them again."""
    prompts: np.ndarray | None = None
    """Per-crop rows of the job's ``FrameFeatures`` when the engine needs more than the mel (e.g. (B, 50, 384))."""
    prepared: np.ndarray | None = None
    """Per-crop rows of the presenter preparation (``PresenterEngine.prepare_presenter``) when there is one."""
    windows: tuple[int, ...] | None = None
    """Lengths of the consecutive windows the crops make, in order (they sum to ``len(crops)``; each at most
    ``EngineNeeds.window``; the pipeline always gives them); None: not given, an engine with windows takes the
    crops in runs of its window."""
    mouth_rest: MouthState | None = None
    """The presenter's closed mouth (``pipeline.mouth.rest_state`` of the whole face track) when the caller knows
    it. An engine that sets the mouth (rather than adding to what the crop shows) first takes each crop's mouth
    back to this state; None: each crop's mouth counts as at rest."""

    def __len__(self) -> int:
        return len(self.crops)


@runtime_checkable
class Engine(Protocol):
    name: str
    """Short engine name as used in settings and status.json (``wav2lip``, ``mouthwarp``)."""
    identity: str
    """What produced the frames, for status.json: e.g. the checkpoint's sha256 prefix, or a version."""
    needs: EngineNeeds
    """The features, crop rule and blend this engine wants (see ``EngineNeeds``)."""
    batch_size: int
    """Faces the engine takes in one pass now (it may shrink, e.g. halved on out-of-memory); a render batch holds
    no more frames than this (``run.batch_frames``)."""

    def prepare(self, mel: np.ndarray) -> None:
        """Called once per audio, before its frames, with the whole (80, T) Wav2Lip mel of the recording.

        Engines that adapt to the recording (e.g. to how loud it is) read it here; others do nothing.
        """
        ...

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        """Mouth-synced crops, one per input crop, same shape and dtype (uint8 BGR)."""
        ...

    def release(self) -> None:
        """Free cached accelerator memory between jobs; the engine stays usable."""
        ...

    def close(self) -> None:
        """Unload the model; the engine must not be used afterwards."""
        ...


@runtime_checkable
class PromptEngine(Engine, Protocol):
    """An engine whose audio features come from its own model (``needs.audio == "whisper"``)."""

    def encode_audio(self, wav: np.ndarray) -> FrameFeatures:
        """The per-frame features of a whole recording (16 kHz mono float32), computed once per job."""
        ...


@runtime_checkable
class PresenterEngine(Engine, Protocol):
    """An engine with a per-presenter preparation (``needs.presenter_prep``), cached by video content."""

    prep_version: str
    """Names everything that shapes the preparation (weights, precision); part of its cache key."""

    def prep_shape(self) -> tuple[int, ...]:
        """Shape of one frame's preparation (e.g. (8, 32, 32) latents)."""
        ...

    def prepare_presenter(self, crops: list[np.ndarray]) -> np.ndarray:
        """float32 (len(crops), *prep_shape()) preparation of these face crops (cut by the crop rule)."""
        ...
