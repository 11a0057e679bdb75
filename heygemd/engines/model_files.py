"""The files an engine needs in a folder: which are there, which are missing, and what to do about it.

No torch here: ``heygemd check`` and the ``auto`` engine choice look at the files without loading anything. Each
engine with weights declares its folder once (a :class:`ModelLayout`: the role of every file, its alternative
names, the hint); :meth:`ModelLayout.find` says what a folder holds, and the engine's loader refuses an incomplete
one (:meth:`ModelFiles.require`) before opening any file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from heygemd.errors import CheckpointError

_MAX_LISTED = 5


def listing(items: Sequence[str]) -> str:
    """The first few ``items`` joined, with "(and N more)" for the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


@dataclass(frozen=True)
class ModelLayout:
    """The files of one engine's folder, by role."""

    engine: str
    """The engine as its errors name it (``LatentSync``)."""
    required: Mapping[str, tuple[str, ...]]
    """Role -> the file's name relative to the folder, or alternative names (the first one present is taken)."""
    hint: str
    """What to do about a missing or broken file: where the files come from (the hint of BAD_CHECKPOINT)."""
    optional: Mapping[str, str] = field(default_factory=dict)
    """Role -> the name of a file used when present."""
    weights: tuple[str, ...] = ()
    """The roles of the files that shape the output, in the order their hash is taken (the engine's identity)."""

    def find(self, folder: Path) -> ModelFiles:
        """Which of the files ``folder`` holds; nothing is opened."""
        folder = Path(folder)
        found: dict[str, Path] = {}
        missing: list[str] = []
        for role, names in self.required.items():
            present = [folder / name for name in names if (folder / name).is_file()]
            if present:
                found[role] = present[0]
            else:
                missing.append(" or ".join(names))
        for role, name in self.optional.items():
            if (folder / name).is_file():
                found[role] = folder / name
        return ModelFiles(folder=folder, found=found, missing=missing, layout=self)


@dataclass(frozen=True)
class ModelFiles:
    """The files of one folder: those found and those missing."""

    folder: Path
    found: dict[str, Path]
    """Role -> the file found for it."""
    missing: list[str]
    """Names of the required files not there (for alternatives: ``a.safetensors or a.bin``)."""
    layout: ModelLayout

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def hint(self) -> str:
        return self.layout.hint

    @property
    def names(self) -> tuple[str, ...]:
        """The files found, relative to the folder (what ``heygemd check`` lists)."""
        return tuple(str(path.relative_to(self.folder)) for path in self.found.values())

    @property
    def weights(self) -> list[Path]:
        """The files found that shape the output, in the layout's fixed order (their hash is the identity)."""
        return [self.found[role] for role in self.layout.weights if role in self.found]

    def __getitem__(self, role: str) -> Path:
        return self.found[role]

    def require(self) -> ModelFiles:
        """These files when none is missing; else CheckpointError naming the first missing one (and how many
        more), with the layout's hint."""
        if self.missing:
            first, rest = self.missing[0], self.missing[1:]
            more = f" (and {len(rest)} more missing: {listing(rest)})" if rest else ""
            raise CheckpointError(
                f"{self.layout.engine} file missing: {first}{more}",
                path=self.folder / first.split(" or ")[0],
                hint=self.hint,
            )
        return self
