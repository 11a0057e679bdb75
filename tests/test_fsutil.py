"""One atomic publish for every file heygemd writes, and the one set of temp-name rules: a share that refuses to
fsync a folder does not fail a file already renamed into place (status.json, outputs, posters, face tracks)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from heygemd import fsutil
from heygemd.errors import ConfigError
from heygemd.names import free_path, is_heygemd_temp, numbered, temp_name, unique_name
from heygemd.pipeline.encode import VideoWriter, write_poster
from heygemd.pipeline.faces import FaceTrack
from tests.pipeline.media import requires_ffmpeg, sine


@pytest.fixture
def share_refusing_folder_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.fsync as some SMB/NFS mounts answer it: EINVAL for a folder, fine for a file. Returns the refusals."""
    real = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return refused


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@requires_ffmpeg
def test_every_publisher_tolerates_a_share_that_refuses_folder_fsync(
    tmp_path: Path, share_refusing_folder_fsync: list[int]
) -> None:
    audio = sine(tmp_path / "a.wav", 0.4)
    out = tmp_path / "out"
    out.mkdir()
    with VideoWriter(out / "clip.mp4", 64, 48, 25, audio, 0.4, preset="ultrafast") as writer:
        for _ in range(10):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    write_poster(np.zeros((48, 64, 3), np.uint8), out / "clip.jpg")
    track = FaceTrack(
        boxes=np.zeros((2, 4), np.float32),
        landmarks=np.zeros((2, 68, 2), np.float32),
        frame_size=(64, 48),
        detector="dlib",
    )
    track.save(out / "track.npz")
    fsutil.atomic_write_bytes(out / "status.json", b"{}")
    assert only(out) == ["clip.jpg", "clip.mp4", "status.json", "track.npz"]
    assert len(share_refusing_folder_fsync) >= 4  # each publish asked, each refusal was accepted


def test_a_failed_write_leaves_neither_temp_nor_target(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), fsutil.atomic_writer(tmp_path / "x.json") as fh:
        fh.write(b"half")
        raise RuntimeError("killed halfway")
    assert only(tmp_path) == []


def test_remove_temps_removes_only_heygemd_temps_and_links_not_their_targets(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text("keep")
    job = tmp_path / "job"
    job.mkdir()
    ours = [temp_name("status.json"), ".status.json.tmp-77-deadbeef", ".a.mp4.partial.mp4", ".t.npz.abcd_123.tmp"]
    for name in ours:
        (job / name).write_bytes(b"")
    link = job / temp_name("claim.json")
    os.symlink(target, link)
    theirs = ["status.json", "a.mp4", ".DS_Store", "a.mp4.part", "notes.tmp", ".hidden.tmp"]
    for name in theirs:
        (job / name).write_bytes(b"")
    removed = fsutil.remove_temps(job)
    assert sorted(p.name for p in removed) == sorted([*ours, link.name])
    assert only(job) == sorted(theirs) and target.read_text() == "keep"
    assert not any(is_heygemd_temp(n) for n in theirs)


def test_remove_temps_leaves_young_ones_in_a_shared_folder(tmp_path: Path) -> None:
    young = tmp_path / temp_name("k.npz")
    young.write_bytes(b"")
    assert fsutil.remove_temps(tmp_path, min_age_s=3600) == []
    assert fsutil.remove_temps(tmp_path, min_age_s=3600, now=young.stat().st_mtime + 3600) == [young]


def test_one_numbering_rule_for_files_folders_and_ids(tmp_path: Path) -> None:
    used: set[str] = set()
    assert [unique_name(n, used) for n in ("clip.mp4", "Clip.mp4", "clip.mp4")] == [
        "clip.mp4",
        "Clip-2.mp4",
        "clip-3.mp4",
    ]
    assert numbered("lesson.01", 2, keep_suffix=False) == "lesson.01-2"
    (tmp_path / "job").mkdir()
    (tmp_path / "job-2").mkdir()
    assert free_path(tmp_path / "job") == tmp_path / "job-3"


# ---------------------------------------------------------------------------------------------- open_regular


def test_open_regular_reads_a_regular_file_through_its_descriptor_even_after_a_swap(tmp_path: Path) -> None:
    target = tmp_path / "voice.wav"
    target.write_bytes(b"the user's audio")
    outside = tmp_path / "secret"
    outside.write_bytes(b"not for the job")
    fd = fsutil.open_regular(target)
    try:
        target.unlink()
        target.symlink_to(outside)  # swapped after the check: the descriptor still reads the checked file
        with open(fsutil.fd_path(fd), "rb") as fh:
            assert fh.read() == b"the user's audio"
    finally:
        os.close(fd)


def test_open_regular_refuses_a_link_naming_its_target(tmp_path: Path) -> None:
    (tmp_path / "real.toml").write_text("crf = 20")
    (tmp_path / "job.toml").symlink_to(tmp_path / "real.toml")
    with pytest.raises(fsutil.UnsafePath, match="symbolic link to .*real.toml"):
        fsutil.open_regular(tmp_path / "job.toml")


def test_open_regular_refuses_a_fifo_without_blocking_and_a_folder(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "job.toml")
    with pytest.raises(fsutil.NotRegularFile, match="named pipe"):
        fsutil.open_regular(tmp_path / "job.toml")
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(fsutil.NotRegularFile, match="folder"):
        fsutil.open_regular(tmp_path / "clip.mp4")
    with pytest.raises(fsutil.NotRegularFile, match="character device"):
        fsutil.open_regular(Path("/dev/zero"))


def test_read_regular_refuses_a_file_over_its_cap_by_size_not_by_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "job.toml"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB declared, nothing read
    with pytest.raises(fsutil.FileTooLarge, match="1,073,741,824 bytes; at most 65,536"):
        fsutil.read_regular(big, max_bytes=65536)
    small = tmp_path / "ok.toml"
    small.write_bytes(b"crf = 20\n")
    assert fsutil.read_regular(small, max_bytes=65536) == b"crf = 20\n"


def nbytes(name: str) -> int:
    return len(name.encode("utf-8"))


def test_numbered_names_fit_in_255_bytes_cut_on_a_character_boundary(tmp_path: Path) -> None:
    folder = "ä" * 127 + "n"  # 255 bytes, 128 characters: a legal folder name as long as one can be
    assert nbytes(folder) == 255
    second = numbered(folder, 2, keep_suffix=False)
    assert nbytes(second) <= 255 and second == "ä" * 126 + "-2", "cut whole characters, keep the number"
    assert numbered(folder, 1234, keep_suffix=False) == "ä" * 125 + "-1234"
    clip = "é" * 125 + "x.mp4"  # 255 bytes
    used: set[str] = set()
    assert [unique_name(clip, used) for _ in range(3)] == [clip, "é" * 124 + "-2.mp4", "é" * 124 + "-3.mp4"]
    (tmp_path / folder).mkdir()
    taken = free_path(tmp_path / folder)
    taken.mkdir()  # a name the filesystem takes
    assert taken.name == second
    odd = "a." + "b" * 253  # a "suffix" that leaves no room for a stem: the whole name is cut instead
    assert numbered(odd, 2) == odd[:253] + "-2"


def test_temp_names_fit_in_255_bytes_and_are_still_recognised_as_heygemd_s(tmp_path: Path) -> None:
    final = "é" * 120 + ".mp4"  # 244 bytes: a long but legal presenter name, and its output name
    temp = temp_name(final)
    assert nbytes(temp) <= 255 and temp.endswith(".mp4") and temp.startswith(".éé")
    assert is_heygemd_temp(temp)
    (tmp_path / temp).write_bytes(b"half written")  # the filesystem takes it
    (tmp_path / final).write_bytes(b"the user's")
    user = "." + final[:100] + ".heygemd-notes.mp4"  # looks close, is not heygemd's
    (tmp_path / user).write_bytes(b"the user's")
    assert fsutil.remove_temps(tmp_path) == [tmp_path / temp]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final, user])
    with fsutil.atomic_writer(tmp_path / ("x" * 255)) as fh:  # every publisher's temporary fits
        fh.write(b"ok")
    assert (tmp_path / ("x" * 255)).read_bytes() == b"ok"


# ---------------------------------------------------------------------------------------------- heygemd's own folders


def test_own_dir_creates_each_level_and_refuses_a_link_at_any_of_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert fsutil.own_dir(state, "archive", "2026-05-01") == state / "archive" / "2026-05-01"
    assert (state / "archive" / "2026-05-01").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "kept").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"kept: is a symbolic link to {elsewhere}"):
        fsutil.own_dir(state, "kept", "job")
    (state / "cache").write_bytes(b"not a folder")
    with pytest.raises(ConfigError, match="cache: is not a folder"):
        fsutil.own_dir(state, "cache")
    linked_state = tmp_path / "linked-state"
    linked_state.symlink_to(state)
    with pytest.raises(ConfigError, match="linked-state: is a symbolic link"):
        fsutil.own_dir(linked_state, "archive")
    assert list(elsewhere.iterdir()) == []


def test_own_subdirs_lists_real_folders_only_and_nothing_through_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "claimed" / "a").mkdir(parents=True)
    (state / "claimed" / "b").mkdir()
    (state / "claimed" / "file").write_bytes(b"")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "input").mkdir(parents=True)
    (state / "claimed" / "planted").symlink_to(elsewhere)
    assert fsutil.own_subdirs(state, "claimed") == [state / "claimed" / "a", state / "claimed" / "b"]
    assert fsutil.own_subdirs(state, "missing") == []
    (state / "archive").symlink_to(elsewhere)
    assert fsutil.own_subdirs(state, "archive") == []


def test_remove_tree_removes_any_depth_and_never_follows_a_link(tmp_path: Path, nested) -> None:
    deep = nested(tmp_path / "job", 1100)
    long_names = nested(tmp_path / "long", 40, name="n" * 250)  # 10 kB of path: more than PATH_MAX
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "keep.txt").write_text("keep")
    (deep / "d" / "link").symlink_to(secret)
    (deep / "file-link").symlink_to(secret / "keep.txt")
    fsutil.remove_tree(deep)
    fsutil.remove_tree(long_names)
    assert not deep.exists() and not long_names.exists()
    assert (secret / "keep.txt").read_text() == "keep"
    link = tmp_path / "top-link"
    link.symlink_to(secret)
    fsutil.remove_tree(link)  # a link given as the tree: the link goes, never what it points to
    assert not os.path.lexists(link) and (secret / "keep.txt").read_text() == "keep"
    fsutil.remove_tree(tmp_path / "missing")  # nothing there: nothing to do
