"""The presenter library attacked as the inbox was: what anyone who can write to the library folder on the share
(or add and delete presenters on the web) can put there -- tomls nested too deeply or that are not files, names
that look alike, names nothing usable is left of, the library folder replaced by a link -- ends as a clear state of
that presenter (or nothing), never as a crash of the daemon, a read outside the library, or a log line per scan."""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from heygemd import layout
from heygemd.control import Control
from heygemd.daemon import presenter_links
from heygemd.daemon.claims import ClaimedJob, claim
from heygemd.daemon.library import (
    MAX_PRESENTERS,
    LibraryFile,
    PresenterOptions,
    load_presenter_options,
    named,
    read_library_status,
    scan_library,
    view,
)
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.preparation import LibraryKeeper, Preparer
from heygemd.daemon.presenter_links import LinkedPresenter, Linker, read_links
from heygemd.errors import BadPresenterOptions, NoSuchPresenter, PresenterExists, UnsafePath
from heygemd.settings import Settings
from tests.daemon.daemon_process import Media
from tests.daemon.test_library import inbox_job
from tests.pipeline.media import png_bomb


def make_settings(tmp_path: Path, **sections: object) -> Settings:
    return Settings.model_validate(
        {
            "paths": {"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox", "models": tmp_path / "models"},
            "intake": {"settle_seconds": 0.0},
            "engine": {"name": "mouthwarp", "device": "cpu"},
            **sections,
        }
    )


def library(settings: Settings) -> Path:
    folder = settings.paths.presenters_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_presenter_toml_nested_too_deeply_fails_that_presenter_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "anna.mp4").write_bytes(b"x")
    (folder / "anna.toml").write_text("notes = " + "[" * 20000 + "]" * 20000 + "\n")  # 40 kB: under the cap
    (folder / "bob.mp4").write_bytes(b"x")

    LibraryKeeper(settings, None).scan()  # the daemon's round goes on

    entries = {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}
    anna = entries["anna"]
    assert anna.state == "failed" and anna.error is not None and anna.error.code == "BAD_PRESENTER_TOML"
    assert anna.error.message.startswith("presenters/anna.toml: not valid TOML: nested too deeply")
    assert entries["bob"].state == "preparing"
    shown = {p.name: p for p in view(settings)}  # what the pages, the API and `heygemd presenters` show
    assert shown["anna"].state == "failed" and shown["bob"].state == "preparing"


def test_a_presenter_toml_that_is_a_link_a_fifo_huge_or_not_utf8_fails_its_presenter_unread(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('display_name = "read through a link"\n')
    (folder / "anna.mp4").write_bytes(b"x")
    (folder / "anna.toml").symlink_to(elsewhere)
    (folder / "bob.mp4").write_bytes(b"x")
    os.mkfifo(folder / "bob.toml")
    (folder / "carla.mp4").write_bytes(b"x")
    with open(folder / "carla.toml", "wb") as sparse:
        sparse.truncate(1 << 30)  # 1 GiB of nothing, on no disk
    (folder / "dora.mp4").write_bytes(b"x")
    (folder / "dora.toml").write_bytes('notes = "café"\n'.encode("latin-1"))

    LibraryKeeper(settings, None).scan()

    entries = {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}
    for name, what in (
        ("anna", "is a symbolic link to"),
        ("bob", "is a named pipe (FIFO), not a regular file"),
        ("carla", "is 1,073,741,824 bytes; at most 65,536 are read"),
        ("dora", "not UTF-8 text"),
    ):
        entry = entries[name]
        assert entry.state == "failed" and entry.error is not None and entry.error.code == "BAD_PRESENTER_TOML"
        assert entry.error.message.startswith(f"presenters/{name}.toml: {what}")
        assert entry.display_name is None  # never read


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_names_that_differ_only_in_unicode_normalisation_are_one_name(tmp_path: Path) -> None:
    # a Mac writes names decomposed (NFD), Windows and Linux composed (NFC): the same name to a person
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "Zoë.mp4").write_bytes(b"x")
    (folder / nfd("Zoë.toml")).write_text('display_name = "Zoë B."\n')
    (folder / "Renée.mp4").write_bytes(b"x")
    (folder / nfd("renée.mov")).write_bytes(b"x")

    files = scan_library(folder, ready_marker=".ready")
    zoe = next(f for f in files if f.name == "Zoë")
    assert zoe.options_file == nfd("Zoë.toml")
    assert load_presenter_options(folder, zoe).display_name == "Zoë B."
    assert [(n, f.file if f else None) for n, f in named(files, [nfd("Zoë"), nfd("zoë"), "ZOË"])] == [
        ("Zoë", "Zoë.mp4")
    ]
    renee = [f for f in files if f.name.casefold() == "renée"]  # one name, two files: both fail, said why
    assert len(renee) == 1 and renee[0].problem is not None and renee[0].problem.code == "PRESENTER_AMBIGUOUS"


def a_library_replaced_by_a_link(tmp_path: Path, settings: Settings) -> Path:
    """The library folder (on the share) replaced by a link to a folder outside it, holding a presenter."""
    outside = tmp_path / "someone-elses"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"not a presenter of this library")
    (outside / "secret.toml").write_text('notes = "private"\n')
    folder = settings.paths.presenters_dir
    folder.rename(tmp_path / "old-library")
    folder.symlink_to(outside)
    return outside


def test_a_library_folder_replaced_by_a_link_is_not_followed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    (library(settings) / "anna.mp4").write_bytes(b"x")
    keeper = LibraryKeeper(settings, None)
    keeper.scan()
    outside = a_library_replaced_by_a_link(tmp_path, settings)
    before = sorted(p.name for p in outside.iterdir())

    with capture_logs() as events:
        for _ in range(3):
            keeper.scan()
    said = [e for e in events if e["log_level"] in ("warning", "error")]
    assert [e["event"] for e in said] == ["library.unreadable"]  # once, not at every scan
    assert "is a symbolic link to" in said[0]["error"] and str(outside) in said[0]["error"]
    assert keeper.files == []
    assert view(settings) == []  # the pages, the API, `heygemd presenters`
    control = Control(settings)
    with pytest.raises(NoSuchPresenter):
        control.presenter("secret")
    with pytest.raises(NoSuchPresenter):
        control.remove_presenter("secret")
    upload = tmp_path / "bob.mp4"
    upload.write_bytes(b"x")
    with pytest.raises(UnsafePath, match="presenters: is a symbolic link to"):
        control.add_presenter(upload, name="bob")
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written, nothing removed there


def test_a_library_folder_swapped_for_a_link_after_the_scan_is_not_read_through(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "secret.mp4").write_bytes(b"x")
    (folder / "secret.toml").write_text("\n")
    found = scan_library(folder, ready_marker=".ready")[0]
    a_library_replaced_by_a_link(tmp_path, settings)  # between the scan and the preparation's reads

    with pytest.raises(BadPresenterOptions, match="presenters: is a symbolic link to"):
        load_presenter_options(folder, found)
    from heygemd.daemon.library import open_presenter_file

    with pytest.raises(UnsafePath, match="presenters: is a symbolic link to"):
        open_presenter_file(folder, found.file)


def claimed_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, presenter: str, meanwhile: Callable[[], object]
) -> tuple[ClaimedJob, LinkedPresenter]:
    """A job naming ``presenter`` claimed, ``meanwhile`` run between the claim's scan of the library and its link;
    the claim and what its record says of the presenter."""
    scan = presenter_links.scan_library

    def scan_then(*args: object, **kwargs: object) -> list[LibraryFile]:
        found = scan(*args, **kwargs)  # type: ignore[arg-type]
        meanwhile()
        return found

    monkeypatch.setattr(presenter_links, "scan_library", scan_then)
    toml = f'presenters = ["{presenter}"]\n'.encode()
    candidate = inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": toml})
    claimed = claim(candidate, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None
    record = read_links(claimed.path)
    assert record is not None
    [linked] = record.presenters
    return claimed, linked


def test_a_claim_whose_library_is_swapped_for_a_link_after_its_scan_links_nothing_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    (library(settings) / "secret.mp4").write_bytes(b"the library's own video")
    claimed, secret = claimed_after(
        settings, monkeypatch, "secret", lambda: a_library_replaced_by_a_link(tmp_path, settings)
    )
    assert secret.file is None and secret.error is not None and secret.error.code == "UNSAFE_PATH"
    assert "presenters: is a symbolic link to" in secret.error.message
    assert sorted(os.listdir(claimed.folder)) == ["job.toml", "lesson.wav"]  # nothing from outside came in


def test_a_presenter_removed_between_the_claims_scan_and_its_link_fails_its_video_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    video = library(settings) / "anna.mp4"
    video.write_bytes(b"anna's video")
    _, anna = claimed_after(settings, monkeypatch, "anna", video.unlink)
    assert anna.file is None and anna.error is not None and anna.error.code == "NO_SUCH_PRESENTER"
    assert "'anna' was removed from the library" in anna.error.message


def test_a_library_file_whose_name_makes_no_presenter_is_logged_once_with_what_to_do(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    os.close(os.open(os.fsencode(folder) + b"/caf\xe9.mp4", os.O_CREAT | os.O_WRONLY))  # Latin-1, not UTF-8
    (folder / "\x1b.mp4").write_bytes(b"x")  # nothing is left of the name once made safe
    (folder / "anna.mp4").write_bytes(b"x")
    keeper = LibraryKeeper(settings, None)

    with capture_logs() as events:
        for _ in range(3):  # the daemon's rounds
            keeper.scan()
    bad = [e for e in events if e["event"] == "library.bad_name"]
    assert sorted(e["file"] for e in bad) == ["\\x1b.mp4", "caf\\xe9.mp4"]  # each once, escaped for the log
    assert all(e["file"].isprintable() and "rename" in e["hint"].lower() for e in bad)
    assert [p.name for p in read_library_status(settings.paths.state_dir).presenters] == ["anna"]

    (folder / "\x1b.mp4").unlink()
    with capture_logs() as events:
        keeper.scan()
        (folder / "\x1b.mp4").write_bytes(b"x")  # back again: said again
        keeper.scan()
    assert [e["file"] for e in events if e["event"] == "library.bad_name"] == ["\\x1b.mp4"]


def test_adds_and_removes_of_one_name_at_once_leave_one_presenter_with_its_own_options(tmp_path: Path) -> None:
    # two web users (or the CLI and the web) add "anna" at the same moment, a third removes it
    settings = make_settings(tmp_path)
    folder = library(settings)
    control = Control(settings)
    sources = {}
    for suffix in (".mp4", ".mov"):
        sources[suffix] = tmp_path / f"upload{suffix}"
        sources[suffix].write_bytes(os.urandom(1 << 20))  # a copy long enough to overlap

    def add(suffix: str) -> str:
        try:
            control.add_presenter(sources[suffix], name="anna", options=PresenterOptions(display_name=suffix))
        except PresenterExists:
            return "exists"
        return "added"

    def remove() -> str:
        try:
            control.remove_presenter("anna")
        except NoSuchPresenter:
            return "none"
        return "removed"

    for _ in range(12):
        with ThreadPoolExecutor(3) as pool:
            results = [f.result() for f in [pool.submit(add, ".mp4"), pool.submit(add, ".mov"), pool.submit(remove)]]
        media = sorted(n for n in os.listdir(folder) if n in ("anna.mp4", "anna.mov"))
        assert len(media) <= 1, (results, media)  # never two files for one name
        if media:
            assert results[:2].count("added") >= 1
            options = load_presenter_options(folder, scan_library(folder, ready_marker=".ready")[0])
            assert media == [f"anna{options.display_name}"]  # the toml is the one added with this file
        else:
            assert "anna.toml" not in os.listdir(folder)  # nothing of a removed presenter is left
        for name in os.listdir(folder):
            os.unlink(folder / name)


def test_the_presenter_limits_hold_for_the_preparation(tmp_path: Path, media: Media) -> None:
    # a picture bomb copied into the library, and a video larger than video.max_presenter_pixels
    settings = make_settings(tmp_path, video={"max_presenter_pixels": 320 * 180 - 1})
    folder = library(settings)
    png_bomb(folder / "bomb.png", 16000, 16000)  # 0.7 MB declaring 256 megapixels
    shutil.copyfile(media.face_a, folder / "anna.mp4")  # 320x180: one pixel over the limit
    keeper = LibraryKeeper(settings, Preparer(settings, Sessions(settings)))
    keeper.scan()
    assert keeper.prepare_next() and keeper.prepare_next()

    entries = {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}
    for name, file, size in (("bomb", "bomb.png", "about 16000x16000"), ("anna", "anna.mp4", "320x180, 57,600")):
        error = entries[name].error
        assert entries[name].state == "failed" and error is not None and error.code == "PICTURE_TOO_LARGE"
        assert error.message.startswith(f"presenters/{file}: the picture is {size}")
        assert error.message.endswith("presenters of at most 57,599 pixels are taken")
        assert "video.max_presenter_pixels" in error.hint
    assert list(layout.posters_root(settings.paths.state_dir).iterdir()) == []


def test_a_presenter_longer_than_the_limit_fails_from_its_probe_and_a_shorter_one_prepares(
    tmp_path: Path, media: Media
) -> None:
    # face_a lasts 1.0 s, face_b 1.2 s: a limit between them
    settings = make_settings(tmp_path, video={"max_presenter_seconds": 1.1})
    folder = library(settings)
    shutil.copyfile(media.face_a, folder / "anna.mp4")
    shutil.copyfile(media.face_b, folder / "bob.mp4")
    keeper = LibraryKeeper(settings, Preparer(settings, Sessions(settings)))
    keeper.scan()
    assert keeper.prepare_next() and keeper.prepare_next()

    entries = {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}
    assert entries["anna"].state == "ready"
    error = entries["bob"].error
    assert entries["bob"].state == "failed" and error is not None and error.code == "PRESENTER_TOO_LONG"
    assert error.message == "presenters/bob.mp4: the video lasts 1.2 s; presenters of at most 1.1 s are taken"
    assert "-t 1.1" in error.hint and "bob.mp4" in error.hint and "video.max_presenter_seconds" in error.hint
    assert entries["bob"].poster is None
    # refused from the probe: nothing of it was decoded, so no face track of it was made (only anna's)
    assert len(list((settings.paths.cache_dir / "faces").rglob("*.npz"))) == 1


def test_a_library_flooded_with_files_keeps_its_first_presenters_and_says_so_once(tmp_path: Path) -> None:
    # anyone on the share can make 20,000 one-byte "videos" in a second: each round of the daemon scans them
    settings = make_settings(tmp_path)
    folder = library(settings)
    for i in range(MAX_PRESENTERS + 3):
        (folder / f"p{i:05d}.mp4").write_bytes(b"x")
    keeper = LibraryKeeper(settings, None)

    with capture_logs() as events:
        for _ in range(2):
            keeper.scan()
    too_many = [e for e in events if e["event"] == "library.too_many"]
    assert len(too_many) == 1 and too_many[0]["passed_over"] == 3
    assert f"at most {MAX_PRESENTERS:,}" in too_many[0]["hint"]
    names = [p.name for p in read_library_status(settings.paths.state_dir).presenters]
    assert len(names) == MAX_PRESENTERS and names[-1] == f"p{MAX_PRESENTERS - 1:05d}"  # the first, in name order
    assert len(view(settings)) == MAX_PRESENTERS


def test_a_presenter_is_found_by_the_name_its_file_was_given_before_it_was_made_safe(tmp_path: Path) -> None:
    # CON.mp4 (a Windows device name) is the presenter _CON; "a: b?.mp4" (copied from a Mac) is "a_ b_"
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "CON.mp4").write_bytes(b"x")
    (folder / "a: b?.mp4").write_bytes(b"x")
    files = scan_library(folder, ready_marker=".ready")
    assert [f.name for f in files] == ["_CON", "a_ b_"]
    found = named(files, ["CON", "con", "a: b?", "_CON"])
    assert [(name, f.file if f else None) for name, f in found] == [("_CON", "CON.mp4"), ("a_ b_", "a: b?.mp4")]
    assert Control(settings).presenter("con").name == "_CON"  # GET /api/presenters/con, the CLI
