"""File names: which heygemd treats as audio, video or still image (by suffix, before ffprobe has a look),
and output names that never collide."""

from pathlib import Path

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".3gp"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def is_audio(path: Path) -> bool:
    return path.suffix.casefold() in AUDIO_SUFFIXES


def is_presenter(path: Path) -> bool:
    """A presenter video, or a still image of the presenter (rendered as a video of the audio's length)."""
    return path.suffix.casefold() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``... when taken (clip.mp4 and clip.mov both give clip.mp4).

    ``used`` holds casefolded names and is updated: on an SMB share Intro.mp4 and intro.mp4 are the same file.
    """
    candidate, n = name, 1
    stem, dot, suffix = name.rpartition(".")
    while candidate.casefold() in used:
        n += 1
        candidate = f"{stem}-{n}.{suffix}" if dot else f"{name}-{n}"
    used.add(candidate.casefold())
    return candidate
