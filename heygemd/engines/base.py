"""The Engine protocol: the one interface both lip-sync engines implement.

An engine gets a batch of face crops (the tracked face box cut from each frame, any size), the 68 facial
landmarks of each crop in crop coordinates, and the Wav2Lip mel window for each frame. It returns one
image per crop, the same size as the crop, with the mouth re-rendered for that audio window.
Pasting the result back into the frame (with a feathered mouth mask) is ``pipeline.render``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from heygemd.pipeline.mouth import MouthState


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
