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

Names a Windows client of the share cannot open (:func:`windows_safe`): reserved device names (CON, NUL, COM1...
with any extension), ``< > : " \\ | ? *``, a trailing dot or space. :func:`make_windows_safe` mends them.

heygemd's own temporary files (status.json, outputs, posters, face tracks, claim.json) are all named by
:func:`temp_name`: ``.<final name>.heygemd-<pid>-<8 hex><suffix>``, hidden, next to the final file, ending in
the final file's suffix (ffmpeg picks the container from it). :func:`is_heygemd_temp` recognises exactly
those (and the names older versions used), so cleanup never removes a user's file.

Every name derived from a user's name (``name-2``, a retry's ``name-retry``, temporary names, and output names
from the ``naming`` template, :func:`output_name`) fits in NAME_MAX_BYTES: the user's part is cut between two
characters (:func:`fit_name`), the extension and number kept.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import string
import unicodedata
from collections.abc import Callable
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


def is_readme(name: str) -> bool:
    """A README (``README``, ``README.md``, ``readme.txt``, ...): a note that explains a folder to the people who
    use it (the repository's own inbox/ has one), never a stray file of a job."""
    return name.casefold().partition(".")[0] == "readme"


WINDOWS_FORBIDDEN = frozenset('<>:"/\\|?*')
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]) *(\..*)?", re.IGNORECASE)
"""Device names Windows reserves, with any extension (``CON``, ``nul.txt``, ``COM1.tar.gz``)."""


def windows_safe(name: str) -> bool:
    """Whether a Windows client of the share can open ``name`` as it is: no reserved device name (CON, PRN, AUX,
    NUL, COM0-9, LPT0-9, with any extension), none of ``< > : " / \\ | ? *`` or control characters, and no
    trailing dot or space."""
    return (
        bool(name)
        and not _WINDOWS_RESERVED.fullmatch(name)
        and not any(c in WINDOWS_FORBIDDEN or ord(c) < 32 for c in name)
        and not name.endswith((".", " "))
    )


def make_windows_safe(name: str) -> str:
    """``name`` changed as little as it takes to be :func:`windows_safe` ('' when nothing is left): each forbidden
    or control character becomes ``_``, trailing dots and spaces go, a reserved device name gets a leading ``_``."""
    name = "".join("_" if c in WINDOWS_FORBIDDEN or ord(c) < 32 else c for c in name).rstrip(". ")
    return f"_{name}" if _WINDOWS_RESERVED.fullmatch(name) else name


SAFE_NAME_BYTES = 180
"""The longest name :func:`plain_basename` keeps (room left for ``-2``, ``-retry``, suffixes and temporary names)."""


def plain_basename(raw: str) -> str:
    """``raw`` reduced to a plain file name: the last path component, NFC, no control characters, no leading
    dots (a hidden name is never part of a job), at most SAFE_NAME_BYTES bytes, one a Windows client can open
    (:func:`make_windows_safe`). '' when nothing is left. Uploaded files, job names and library presenter names
    are made safe by it."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > SAFE_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 10:
            stem, suffix = name, ""
        keep = SAFE_NAME_BYTES - len(suffix.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return make_windows_safe(name)


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


# ---------------------------------------------------------------------------------------------- name lengths

NAME_MAX_BYTES = 255
"""The longest file or folder name (one path component) Linux file systems take: 255 bytes, not characters (an
``ä`` takes 2 in UTF-8, a Chinese character 3). Every name heygemd derives from a user's name fits in it."""


_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")
"""A file extension heygemd keeps whole in the names it makes (output templates, temporary names)."""


def name_bytes(name: str) -> int:
    """The length of ``name`` as the file system counts it (a name that is not valid UTF-8 included)."""
    return len(os.fsencode(name))


def fit_name(stem: str, tail: str = "", *, max_bytes: int = NAME_MAX_BYTES) -> str:
    """``stem + tail`` in at most ``max_bytes`` bytes: ``stem`` cut at its end, between two characters, as far as
    needed; ``tail`` (an extension, a number) is kept whole. The caller makes sure ``tail`` itself fits."""
    room = max_bytes - name_bytes(tail)
    if name_bytes(stem) <= room:
        return stem + tail
    kept = used = 0
    for char in stem:
        used += name_bytes(char)
        if used > room:
            break
        kept += 1
    return stem[:kept] + tail


# ---------------------------------------------------------------------------------------------- unique names


def numbered(name: str, n: int, *, keep_suffix: bool = True, tail: str = "") -> str:
    """The ``n``-th candidate for ``name``: ``name`` for 1, else ``stem-n.ext`` (``keep_suffix``) or ``name-n``;
    ``tail`` comes before the number (``lesson-retry``, ``lesson-retry-2``). The stem (or name) is cut to fit in
    NAME_MAX_BYTES, the extension, tail and number are kept."""
    number = "" if n == 1 else f"-{n}"
    stem, dot, suffix = name.rpartition(".")
    kept = f"{tail}{number}.{suffix}"
    if keep_suffix and dot and stem and name_bytes(kept) < NAME_MAX_BYTES:
        return fit_name(stem, kept)
    return fit_name(name, tail + number)


def _first_unused(candidate: Callable[[int], str], used: set[str]) -> str:
    """The first of ``candidate(1)``, ``candidate(2)``... whose casefolded form is not in ``used`` (then added)."""
    n = 1
    while (name := candidate(n)).casefold() in used:
        n += 1
    used.add(name.casefold())
    return name


def unique_name(name: str, used: set[str], *, keep_suffix: bool = True) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``... when taken (clip.mp4 and clip.mov both give clip.mp4).

    ``used`` holds casefolded names and is updated: on an SMB share Intro.mp4 and intro.mp4 are the same file.
    """
    return _first_unused(lambda n: numbered(name, n, keep_suffix=keep_suffix), used)


def free_path(target: Path) -> Path:
    """``target``, or ``target-2``, ``target-3``... : the first that does not exist (for folders)."""
    n = 1
    while (candidate := target.with_name(numbered(target.name, n, keep_suffix=False))).exists():
        n += 1
    return candidate


# ---------------------------------------------------------------------------------------------- output names

POSTER_SUFFIX = ".jpg"
"""A poster is named as its output, with this extension."""


def naming_parts(template: str) -> tuple[list[str], str]:
    """Parse an output name template (``[outbox] naming``, job.toml ``naming``): text and ``{stem}`` fields, and
    nothing else, ending in an extension. Returns the texts around the ``{stem}`` fields (one more than there are
    fields; the last without the extension) and the extension. ValueError says what is wrong.

    Only the literal ``{stem}`` is a field: an attribute or index (``{stem.x[1]}``), a conversion (``{stem!r}``) or
    a format spec (``{stem:>9}``) is refused here, before anything is formatted; names are made by
    :func:`output_name`, which never calls ``str.format``.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    texts = [""]
    for text, field, spec, conversion in parsed:
        texts[-1] += text
        if field is None:
            continue
        if field != "stem":
            if field.startswith(("stem.", "stem[")):
                raise ValueError(f"{{{field}}}: no attribute or index is allowed, only {{stem}} itself")
            raise ValueError(f"{{{field}}}: only the placeholder {{stem}} is allowed")
        if conversion is not None:
            raise ValueError(f"{{stem!{conversion}}}: no conversion is allowed, only {{stem}} itself")
        if spec:
            raise ValueError(f"{{stem:{spec}}}: no format spec is allowed, only {{stem}} itself")
        texts.append("")
    if any(c in text for text in texts for c in "/\\\0"):
        raise ValueError("must be a file name, not a path")
    if len(texts) == 1:
        raise ValueError('must contain {stem}, e.g. "{stem}_synced.mp4", so outputs of different videos differ')
    body, dot, extension = texts[-1].rpartition(".")
    if not dot or not _EXTENSION.fullmatch(dot + extension):
        raise ValueError('needs a file extension after the last {stem}, e.g. "{stem}.mp4"')
    return [*texts[:-1], body], dot + extension


def output_name(template: str, stem: str, n: int = 1) -> str:
    """The ``n``-th output name (``-n`` before the extension from 2 on) for an input whose name without its
    suffix is ``stem``: ``template`` with each ``{stem}`` replaced, ``stem`` cut at its end (between characters)
    until the name, and its poster, fit in NAME_MAX_BYTES. Always one plain name in the job's outbox folder.
    ValueError when ``template`` is not valid, or not even one character of ``stem`` fits."""
    texts, extension = naming_parts(template)
    tail = ("" if n == 1 else f"-{n}") + extension
    limit = NAME_MAX_BYTES - max(0, name_bytes(POSTER_SUFFIX) - name_bytes(extension))
    for cut in range(len(stem), 0, -1):
        name = stem[:cut].join(texts) + tail
        if name_bytes(name) <= limit:
            if name in (".", "..") or "/" in name or "\0" in name:  # a stem and checked texts never make one: defence
                raise ValueError(f"{name!r} is not a plain file name")
            return name
    raise ValueError(f"is longer than {limit} bytes with even one character of {{stem}}")


def unique_output_name(template: str, stem: str, used: set[str]) -> str:
    """:func:`output_name`, numbered until unused (``used`` as for :func:`unique_name`)."""
    return _first_unused(lambda n: output_name(template, stem, n), used)


# ---------------------------------------------------------------------------------------------- heygemd's temp names

_TEMP = re.compile(r"^\.(?P<final>.+)\.heygemd-(?P<pid>\d+)-[0-9a-f]{8}(?:\.[A-Za-z0-9]+)?$")
_LEGACY_TEMPS = (
    re.compile(r"^\.(?P<final>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$"),  # status.json, claim.json (before names.py)
    re.compile(r"^\.(?P<final>.+)\.partial(?:\.[A-Za-z0-9]+)?$"),  # outputs and posters
    re.compile(r"^\.(?P<final>.+\.npz)\.[A-Za-z0-9_]{8}\.tmp$"),  # face tracks (tempfile.mkstemp)
)


def temp_name(final: str) -> str:
    """A fresh temporary name for writing ``final`` in the same folder (see the module docstring); ``final`` is cut
    (between characters) so the name fits in NAME_MAX_BYTES: a name as long as they come still gets one."""
    suffix = Path(final).suffix
    if not _EXTENSION.fullmatch(suffix):
        suffix = ""
    return "." + fit_name(final, f".heygemd-{os.getpid()}-{secrets.token_hex(4)}{suffix}", max_bytes=NAME_MAX_BYTES - 1)


def temp_path(final: Path) -> Path:
    """Where to write ``final`` before it is renamed into place."""
    return final.with_name(temp_name(final.name))


def is_heygemd_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file heygemd made (this version or an earlier one), nothing else."""
    return any(p.match(name) for p in (_TEMP, *_LEGACY_TEMPS))
