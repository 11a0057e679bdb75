"""File-name rules, in one place: what a name in the inbox or a job folder means, which files are audio and
presenters (by suffix, before ffprobe has a look), unique "name-2" names, and heygemd's own temporary names.

Three kinds of names besides ordinary files (:func:`classify_name`):

IN_FLIGHT: a producer is still writing. Their presence means "the copy is not finished: wait", so they
  block readiness of the job that holds them (and an inbox folder with such a name is not a job yet).
  *.part / *.partial   browsers, rclone (name.XXXXXX.partial), wget, many copy tools
  *.tmp                generic temp files; Syncthing's temp files end in .tmp too
  *.crdownload         Chrome downloads
  .syncthing.*         Syncthing temp file on Unix peers;   ~syncthing~*  on Windows peers
  .~lock*              LibreOffice lock file: a document in the folder is open in an editor
  ~$*                  MS Office owner file: a document in the folder is open in an editor

JUNK: operating-system clutter that appears in any folder a desktop touched. It never blocks or counts:
  .DS_Store, ._* (macOS AppleDouble, written next to each file copied to SMB), Thumbs.db, ehthumbs.db,
  desktop.ini, and every other dotfile (hidden = not part of the job; this includes the .ready marker,
  which is looked at separately). Junk directories are skipped with everything in them: Synology @eaDir,
  __MACOSX, $RECYCLE.BIN, #recycle, System Volume Information, and dot dirs (.Trashes, .Spotlight-V100,
  .fseventsd, .stfolder, .stversions, ...).

Comparisons ignore case: Windows clients spell these with any case.

heygemd's own temporary files (status.json, outputs, posters, face tracks, claim.json) are all named by
:func:`temp_name`: ``.<final name>.heygemd-<pid>-<8 hex><suffix>``, hidden, next to the final file, ending in
the final file's suffix (ffmpeg picks the container from it). :func:`is_heygemd_temp` recognises exactly
those (and the names older versions used), so cleanup never removes a user's file.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import unicodedata
from pathlib import Path

# ---------------------------------------------------------------------------------------------- name kinds

IN_FLIGHT_SUFFIXES: tuple[str, ...] = (".part", ".partial", ".tmp", ".crdownload")
IN_FLIGHT_PREFIXES: tuple[str, ...] = (".syncthing.", "~syncthing~", ".~lock", "~$")
JUNK_NAMES: frozenset[str] = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
JUNK_DIRS: frozenset[str] = frozenset(
    {"@eadir", "__macosx", "$recycle.bin", "#recycle", "#snapshot", "system volume information", "lost+found"}
)


class NameKind(enum.Enum):
    """What a file or folder name inside the inbox or a job folder means."""

    NORMAL = "normal"
    IN_FLIGHT = "in_flight"
    JUNK = "junk"


def classify_name(name: str, *, is_dir: bool = False) -> NameKind:
    """Classify one name (not a path) by the rules above. In-flight rules win over the dotfile rule."""
    low = name.casefold()
    if low.endswith(IN_FLIGHT_SUFFIXES) or low.startswith(IN_FLIGHT_PREFIXES):
        return NameKind.IN_FLIGHT
    if low.startswith(".") or low in JUNK_NAMES:
        return NameKind.JUNK
    if is_dir and low in JUNK_DIRS:
        return NameKind.JUNK
    return NameKind.NORMAL


def plain_name(name: str, *, is_dir: bool = False) -> bool:
    """A single path component that is an ordinary (non-hidden, non-junk, not in flight) name: what a job id, or a
    file the web server serves by name, must be."""
    return (
        bool(name)
        and not any(c in name for c in "/\\\0")
        and name not in (".", "..")
        and classify_name(name, is_dir=is_dir) is NameKind.NORMAL
    )


def encodable_name(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 (a name from an old system in another encoding is not)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(name: str) -> str:
    """``name`` as text for logs and status.json, also when it is not valid UTF-8."""
    return os.fsencode(name).decode("utf-8", "replace")


_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` as one line that is safe to print on a terminal: every control character (escape sequences,
    newlines, carriage returns, tabs, BEL, DEL, the C1 range), every bidirectional override (which would show a
    name reordered) and every byte of a name that is not UTF-8 written as a Python escape (``\\x1b``, ``\\n``,
    ``\\u202e``, ``\\xe9``); everything else as it is. Every table the CLI prints passes its values through here:
    names come from whoever can write to the share."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cs") or unicodedata.bidirectional(ch) in _BIDI_CONTROLS:
            out.append(_SHORT_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------------------------------------- media kinds

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".3gp"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MP4_FAMILY_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".m4a", ".3gp"})
"""ISO base media files: complete only once their index (the ``moov`` box) is written."""


def is_audio(path: Path) -> bool:
    return path.suffix.casefold() in AUDIO_SUFFIXES


def is_presenter(path: Path) -> bool:
    """A presenter video, or a still image of the presenter (rendered as a video of the audio's length)."""
    return path.suffix.casefold() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def is_mp4_family(path: Path) -> bool:
    return path.suffix.casefold() in MP4_FAMILY_SUFFIXES


# ---------------------------------------------------------------------------------------------- unique names


def numbered(name: str, n: int, *, keep_suffix: bool = True) -> str:
    """The ``n``-th candidate for ``name``: itself for 1, else ``stem-n.ext`` (``keep_suffix``) or ``name-n``."""
    if n == 1:
        return name
    stem, dot, suffix = name.rpartition(".")
    if keep_suffix and dot and stem:
        return f"{stem}-{n}.{suffix}"
    return f"{name}-{n}"


def unique_name(name: str, used: set[str], *, keep_suffix: bool = True) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``... when taken (clip.mp4 and clip.mov both give clip.mp4).

    ``used`` holds casefolded names and is updated: on an SMB share Intro.mp4 and intro.mp4 are the same file.
    """
    n = 1
    while (candidate := numbered(name, n, keep_suffix=keep_suffix)).casefold() in used:
        n += 1
    used.add(candidate.casefold())
    return candidate


def free_path(target: Path) -> Path:
    """``target``, or ``target-2``, ``target-3``... : the first that does not exist (for folders)."""
    n = 1
    while (candidate := target.with_name(numbered(target.name, n, keep_suffix=False))).exists():
        n += 1
    return candidate


# ---------------------------------------------------------------------------------------------- heygemd's temp names

_SUFFIX = re.compile(r"\.[A-Za-z0-9]+")
_TEMP = re.compile(r"^\.(?P<final>.+)\.heygemd-(?P<pid>\d+)-[0-9a-f]{8}(?:\.[A-Za-z0-9]+)?$")
_LEGACY_TEMPS = (
    re.compile(r"^\.(?P<final>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$"),  # status.json, claim.json (before names.py)
    re.compile(r"^\.(?P<final>.+)\.partial(?:\.[A-Za-z0-9]+)?$"),  # outputs and posters
    re.compile(r"^\.(?P<final>.+\.npz)\.[A-Za-z0-9_]{8}\.tmp$"),  # face tracks (tempfile.mkstemp)
)


def temp_name(final: str) -> str:
    """A fresh temporary name for writing ``final`` in the same folder (see the module docstring)."""
    suffix = Path(final).suffix
    if not _SUFFIX.fullmatch(suffix):
        suffix = ""
    return f".{final}.heygemd-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def temp_path(final: Path) -> Path:
    """Where to write ``final`` before it is renamed into place."""
    return final.with_name(temp_name(final.name))


def is_heygemd_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file heygemd made (this version or an earlier one), nothing else."""
    return any(p.match(name) for p in (_TEMP, *_LEGACY_TEMPS))
