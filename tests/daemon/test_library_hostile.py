"""The presenter library attacked as the inbox was: what anyone who can write to the library folder on the share
(or add and delete presenters on the web) can put there -- tomls nested too deeply or that are not files, names
that look alike, names nothing usable is left of, the library folder replaced by a link -- ends as a clear state of
that presenter (or nothing), never as a crash of the daemon, a read outside the library, or a log line per scan."""

from __future__ import annotations

import os
from pathlib import Path

from heygemd.daemon.library import read_library_status, view
from heygemd.daemon.preparation import LibraryKeeper
from heygemd.settings import Settings


def make_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "paths": {"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox", "models": tmp_path / "models"},
            "intake": {"settle_seconds": 0.0},
            "engine": {"name": "mouthwarp", "device": "cpu"},
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


def test_a_presenter_toml_that_is_a_link_or_a_fifo_fails_its_presenter_unread(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('display_name = "read through a link"\n')
    (folder / "anna.mp4").write_bytes(b"x")
    (folder / "anna.toml").symlink_to(elsewhere)
    (folder / "bob.mp4").write_bytes(b"x")
    os.mkfifo(folder / "bob.toml")

    LibraryKeeper(settings, None).scan()

    entries = {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}
    for name, what in (("anna", "is a symbolic link to"), ("bob", "is a named pipe (FIFO), not a regular file")):
        entry = entries[name]
        assert entry.state == "failed" and entry.error is not None and entry.error.code == "BAD_PRESENTER_TOML"
        assert entry.error.message.startswith(f"presenters/{name}.toml: {what}")
        assert entry.display_name is None  # never read
