"""The presenter library on real folders: what the folder makes of its files (names, options, links, FIFOs, two files
for one name), a job naming presenters (job.toml), the files linked into a claimed job (hard links, a copy across
file systems, unknown names, failed presenters, a claim cut short), and the keeper: a copy settling, a presenter
prepared between jobs with the real pipeline (ready with its poster, or failed with the error a render would give),
a changed file prepared again, a removed one forgotten and its cache entries unpinned, jobs waiting for a copy; a
presenter overwritten in place after the claim (its video fails PRESENTER_CHANGED, a copied one renders)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from heygemd import layout
from heygemd.daemon.claims import ClaimedJob, claim
from heygemd.daemon.jobs import JobOptions, load_job
from heygemd.daemon.library import (
    LibraryStatus,
    PresenterStatus,
    load_presenter_options,
    named,
    presenter_name,
    read_library_status,
    scan_library,
    view,
    write_library_status,
)
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.outbox import finish_inputs
from heygemd.daemon.preparation import LibraryKeeper, Preparer
from heygemd.daemon.presenter_links import Linker, link_presenters, read_links
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.service import Service
from heygemd.daemon.status import ErrorStatus, read_status
from heygemd.daemon.waiting import read_waiting
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import BadPresenterOptions, JobError, PresenterChanged
from heygemd.fsutil import InputFile
from heygemd.pipeline import presenter_cache
from heygemd.settings import Settings
from tests.daemon.daemon_process import Media
from tests.pipeline.media import lavfi_clip

SETTLE = 10.0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_settings(tmp_path: Path, **intake: object) -> Settings:
    return Settings.model_validate(
        {
            "paths": {"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox", "models": tmp_path / "models"},
            "intake": {"settle_seconds": SETTLE, **intake},
            "engine": {"name": "mouthwarp", "device": "cpu"},
            "video": {"preset": "ultrafast"},
        }
    )


def library(settings: Settings) -> Path:
    folder = settings.paths.presenters_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------- the folder


def test_the_folder_makes_one_presenter_per_media_file(tmp_path: Path) -> None:
    folder = tmp_path / "presenters"
    folder.mkdir()
    for name in ("anna.mp4", "Bob Smith.MOV", "carla.jpg", "notes.txt", "clip.mp4.part", ".DS_Store", "CON.mp4"):
        (folder / name).write_bytes(b"x")
    (folder / "anna.toml").write_text('display_name = "Anna"\n')
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.mp4").write_bytes(b"x")
    os.utime(folder / "anna.mp4", ns=(1, 1_000))
    (folder / "anna.mp4.ready").touch()

    found = {f.name: f for f in scan_library(folder, ready_marker=".ready")}
    assert set(found) == {"anna", "Bob Smith", "carla", "_CON"}  # made safe as a job's name is
    assert found["anna"].options_file == "anna.toml" and found["anna"].marked
    assert not found["carla"].marked and found["carla"].options_file is None
    assert all(f.problem is None for f in found.values())
    assert presenter_name("clip.mp4") == "clip" and presenter_name("..mp4") is None


def test_links_fifos_and_two_files_for_one_name_fail_their_presenter(tmp_path: Path) -> None:
    folder = tmp_path / "presenters"
    folder.mkdir()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    (folder / "anna.mp4").symlink_to(secret)
    os.mkfifo(folder / "pipe.mp4")
    (folder / "bob.mp4").write_bytes(b"x")
    (folder / "BOB.mov").write_bytes(b"x")

    found = {f.name: f for f in scan_library(folder, ready_marker=".ready")}
    assert found["anna"].problem is not None and found["anna"].problem.code == "UNSAFE_PATH"
    assert found["anna"].problem.message.startswith("presenters/anna.mp4: is a symbolic link to")
    assert str(secret) in found["anna"].problem.message  # says where it points; never read
    assert found["pipe"].problem is not None and found["pipe"].problem.code == "NOT_A_FILE"
    ambiguous = [f for f in found.values() if f.problem and f.problem.code == "PRESENTER_AMBIGUOUS"]
    assert len(ambiguous) == 1 and "BOB.mov, bob.mp4" in ambiguous[0].problem.message  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError):
        scan_library(tmp_path / "absent", ready_marker=".ready")


def test_a_presenters_toml_is_read_and_a_bad_one_named(tmp_path: Path) -> None:
    folder = tmp_path / "presenters"
    folder.mkdir()
    (folder / "anna.mp4").write_bytes(b"x")
    (folder / "anna.toml").write_text(
        'display_name = "Anna S."\nface = "left"\nloop_mode = "loop"\nengine = "mouthwarp"\nnotes = "studio B"\n'
    )
    (folder / "bob.mp4").write_bytes(b"x")
    (folder / "bob.toml").write_text('face = "middle"\ncolour = 1\n')
    found = {f.name: f for f in scan_library(folder, ready_marker=".ready")}
    options = load_presenter_options(folder, found["anna"])
    got = (options.display_name, options.face, options.loop_mode, options.engine, options.notes)
    assert got == ("Anna S.", "left", "loop", "mouthwarp", "studio B")
    with pytest.raises(BadPresenterOptions) as bad:
        load_presenter_options(folder, found["bob"])
    assert bad.value.message.startswith("presenters/bob.toml: ")
    assert "'face'" in bad.value.message and "'colour': unknown option" in bad.value.message


def test_a_job_may_hold_only_its_audio_when_it_names_presenters(tmp_path: Path) -> None:
    job = tmp_path / "lesson"
    job.mkdir()
    (job / "lesson.wav").write_bytes(b"RIFF")
    with pytest.raises(JobError, match="no presenter video or image"):
        load_job(job)
    (job / "job.toml").write_text('presenters = ["anna", "bob"]\n')
    spec = load_job(job)
    assert spec.videos == [] and spec.options.presenters == ["anna", "bob"]
    assert JobOptions.model_validate({"presenters": "all"}).presenters == "all"
    assert JobOptions.model_validate({"presenters": "anna"}).presenters == ["anna"]


def test_names_are_found_ignoring_case_each_once_and_all_means_every_one(tmp_path: Path) -> None:
    folder = tmp_path / "presenters"
    folder.mkdir()
    for name in ("anna.mp4", "bob.mp4", "clip10.mp4", "clip2.mp4"):
        (folder / name).write_bytes(b"x")
    files = scan_library(folder, ready_marker=".ready")
    got = [(n, f.name if f else None) for n, f in named(files, ["ANNA", "anna", "zoe", "bob"])]
    assert got == [("anna", "anna"), ("zoe", None), ("bob", "bob")]
    assert [n for n, _ in named(files, "all")] == ["anna", "bob", "clip2", "clip10"]


# ---------------------------------------------------------------------------------------------- the claim


def inbox_job(settings: Settings, name: str, files: dict[str, bytes | Path]) -> Candidate:
    folder = settings.paths.inbox / name
    folder.mkdir(parents=True)
    for fname, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, folder / fname)
        else:
            (folder / fname).write_bytes(content)
    return Candidate(name, folder)


def test_a_claim_links_the_named_presenters_into_the_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "anna.mp4").write_bytes(b"anna's video")
    (folder / "bob.mp4").write_bytes(b"bob's video")
    (folder / "anna.toml").write_text('loop_mode = "loop"\n')
    candidate = inbox_job(
        settings,
        "lesson",
        {"lesson.wav": b"RIFF", "bob.mp4": b"the job's own bob", "job.toml": b'presenters = ["anna", "bob", "zoe"]\n'},
    )
    claimed = claim(candidate, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None

    record = read_links(claimed.path)
    assert record is not None
    assert [(p.name, p.file, p.error.code if p.error else None) for p in record.presenters] == [
        ("anna", "anna.mp4", None),
        ("bob", "bob-2.mp4", None),  # the job's own bob.mp4 keeps its name
        ("zoe", None, "NO_SUCH_PRESENTER"),
    ]
    zoe = record.presenters[2].error
    assert zoe is not None and "the presenters there: anna, bob" in zoe.message
    anna = record.presenters[0]
    assert anna.options.loop_mode == "loop" and anna.library_file == "presenters/anna.mp4" and not anna.copied
    assert os.stat(claimed.folder / "anna.mp4").st_ino == os.stat(folder / "anna.mp4").st_ino  # a hard link
    assert (claimed.folder / "bob.mp4").read_bytes() == b"the job's own bob"
    assert (claimed.folder / "bob-2.mp4").read_bytes() == b"bob's video"
    assert not layout.linking_dir(claimed.path).exists()

    (folder / "anna.mp4").unlink()  # removed from the library while the job waits: the job keeps its file
    (folder / "anna.mp4").write_bytes(b"someone else")
    again = link_presenters(claimed.path, folder, settings.paths.state_dir)
    assert again == record  # made once: a second call (the worker's) only reads it
    assert (claimed.folder / "anna.mp4").read_bytes() == b"anna's video"
    spec = load_job(claimed.folder, job_id=claimed.job_id)
    assert [v.name for v in spec.videos] == ["anna.mp4", "bob-2.mp4", "bob.mp4"]


def test_a_claim_cut_short_links_again_and_moves_what_was_linked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "anna.mp4").write_bytes(b"anna")
    candidate = inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": b'presenters = "all"\n'})
    claimed = claim(candidate, settings.paths.state_dir)  # killed before linking: nothing linked, no record
    assert claimed is not None and read_links(claimed.path) is None
    leftover = layout.linking_dir(claimed.path)
    leftover.mkdir()
    (leftover / "anna.mp4").write_bytes(b"half")  # a link made before the kill, its record never written

    record = Linker.from_settings(settings)(claimed.path)
    assert [p.file for p in record.presenters] == ["anna.mp4"]
    assert (claimed.folder / "anna.mp4").read_bytes() == b"anna"
    assert sorted(os.listdir(claimed.folder)) == ["anna.mp4", "job.toml", "lesson.wav"]

    # killed after the record, before the moves: the moves are finished, nothing is chosen again
    leftover.mkdir()
    (claimed.folder / "anna.mp4").rename(leftover / "anna.mp4")
    (folder / "anna.mp4").unlink()
    again = Linker.from_settings(settings)(claimed.path)
    assert again == record and (claimed.folder / "anna.mp4").read_bytes() == b"anna"
    assert not leftover.exists()


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs /dev/shm on a file system of its own",
)
def test_a_library_on_another_file_system_is_copied_into_the_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    shm = Path("/dev/shm") / f"heygemd-test-{os.getpid()}"
    shm.mkdir()
    try:
        (shm / "anna.mp4").write_bytes(b"anna " * 1000)
        candidate = inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": b'presenters = ["anna"]\n'})
        claimed = claim(candidate, settings.paths.state_dir, presenters=Linker(shm))
        assert claimed is not None
        record = read_links(claimed.path)
        assert record is not None and record.presenters[0].copied
        assert (claimed.folder / "anna.mp4").read_bytes() == b"anna " * 1000
    finally:
        shutil.rmtree(shm)


def test_a_presenter_that_failed_its_preparation_fails_its_video_with_that_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "anna.mp4").write_bytes(b"no face here")
    (folder / "bob.mp4").symlink_to("/etc/hostname")
    found = {f.name: f for f in scan_library(folder, ready_marker=".ready")}
    no_face = ErrorStatus(code="NO_FACE", message="presenters/anna.mp4: a face was found in 0% of the frames")
    write_library_status(
        settings.paths.state_dir,
        LibraryStatus(
            presenters=[
                PresenterStatus(
                    name="anna", file="anna.mp4", state="failed", identity=found["anna"].identity, error=no_face
                )
            ]
        ),
    )
    candidate = inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": b'presenters = "all"\n'})
    claimed = claim(candidate, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None
    record = read_links(claimed.path)
    assert record is not None
    assert [(p.name, p.error.code if p.error else None) for p in record.presenters] == [
        ("anna", "NO_FACE"),
        ("bob", "UNSAFE_PATH"),
    ]
    assert sorted(os.listdir(claimed.folder)) == ["job.toml", "lesson.wav"]  # nothing linked, least of all the link

    os.utime(folder / "anna.mp4", ns=(1, 2))  # the file changed since it failed: prepared again, linked meanwhile
    other = inbox_job(settings, "lesson-2", {"lesson.wav": b"RIFF", "job.toml": b'presenters = ["anna"]\n'})
    claimed = claim(other, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None and (claimed.folder / "anna.mp4").is_file()


# ---------------------------------------------------------------------------------------------- the keeper


@pytest.fixture
def faceless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lavfi_clip(tmp_path_factory.mktemp("faceless") / "pattern.mp4", size="320x180", seconds=1)


def entries(settings: Settings) -> dict[str, PresenterStatus]:
    return {p.name: p for p in read_library_status(settings.paths.state_dir).presenters}


def test_presenters_settle_then_are_prepared_between_jobs(tmp_path: Path, media: Media, faceless: Path) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    clock = Clock()
    sessions = Sessions(settings)
    keeper = LibraryKeeper(settings, Preparer(settings, sessions), clock=clock)
    shutil.copyfile(media.face_a, folder / "anna.mp4")
    shutil.copyfile(faceless, folder / "pattern.mp4")
    (folder / "empty.mp4").write_bytes(b"")  # a copy that has not begun: it waits, then times out
    (folder / "link.mp4").symlink_to(media.face_b)

    assert keeper.scan() == pytest.approx(SETTLE)
    now = entries(settings)
    assert (now["anna"].state, now["anna"].stage) == ("preparing", "waiting")
    assert "settling" in (now["anna"].waiting_for or "")
    assert now["link"].state == "failed" and now["link"].error and now["link"].error.code == "UNSAFE_PATH"
    assert keeper.prepare_next() is False  # nothing is settled yet

    clock.t = SETTLE
    assert keeper.scan() == 0.0
    now = entries(settings)
    assert (now["anna"].stage, now["pattern"].stage) == ("queued", "queued")
    assert now["empty"].stage == "waiting" and "0 bytes so far" in (now["empty"].waiting_for or "")
    assert {p.name: p.state for p in view(settings)} == {k: v.state for k, v in now.items()}

    assert keeper.prepare_next() and keeper.prepare_next()  # one presenter at a time
    assert keeper.prepare_next() is False
    now = entries(settings)
    anna = now["anna"]
    assert anna.state == "ready" and anna.stage is None and anna.progress == 1.0
    assert (anna.width, anna.height, anna.still) == (320, 180, False)
    assert anna.duration_s == pytest.approx(1.0, abs=0.05) and anna.face_ratio and anna.face_ratio > 0.9
    assert anna.engines == ["mouthwarp"] and anna.face_track == "computed"
    poster = layout.poster_file(settings.paths.state_dir, "anna")
    assert anna.poster == poster.name and poster.read_bytes()[:2] == b"\xff\xd8"
    pattern = now["pattern"]
    assert pattern.state == "failed" and pattern.error is not None and pattern.error.code == "NO_FACE"
    assert pattern.error.message.startswith("presenters/pattern.mp4: a face was found in 0% of the frames")

    clock.t += settings.intake.incomplete_timeout
    keeper.scan()
    assert keeper.prepare_next()
    empty = entries(settings)["empty"]
    assert empty.state == "failed" and empty.error is not None
    assert empty.error.message.startswith("presenters/empty.mp4")


def test_a_changed_presenter_is_prepared_again_and_a_removed_one_forgotten(tmp_path: Path, media: Media) -> None:
    settings = make_settings(tmp_path, settle_seconds=0.0)
    folder = library(settings)
    keeper = LibraryKeeper(settings, Preparer(settings, Sessions(settings)))
    shutil.copyfile(media.face_a, folder / "anna.mp4")
    keeper.scan()
    assert keeper.prepare_next()
    first = entries(settings)["anna"]
    assert first.state == "ready" and first.face_track == "computed"

    shutil.copyfile(media.face_b, folder / "anna.mp4")
    (folder / "anna.toml").write_text('display_name = "Anna"\n')
    keeper.scan()
    changed = entries(settings)["anna"]
    assert (changed.state, changed.stage, changed.display_name) == ("preparing", "queued", "Anna")
    assert keeper.prepare_next()
    assert entries(settings)["anna"].state == "ready"

    shutil.copyfile(media.face_a, folder / "anna.mp4")  # back to a video prepared before: its face track is cached
    keeper.scan()
    assert keeper.prepare_next()
    assert entries(settings)["anna"].face_track == "cached"

    presenter_cache.pin(settings.paths.cache_dir, ["kept.npy"])
    keeper._pins = None  # noqa: SLF001  (as a new process would, the keeper writes its pins again)
    (folder / "anna.mp4").unlink()
    keeper.scan()
    assert entries(settings) == {}
    assert not layout.poster_file(settings.paths.state_dir, "anna").exists()
    assert presenter_cache.pinned(settings.paths.cache_dir) == frozenset()


def test_a_job_naming_a_presenter_still_being_copied_waits_for_it(tmp_path: Path, media: Media) -> None:
    settings = make_settings(tmp_path)
    folder = library(settings)
    clock = Clock()
    keeper = LibraryKeeper(settings, None, clock=clock)
    shutil.copyfile(media.face_a, folder / "anna.mp4")
    ran: list[str] = []

    def run(claimed: ClaimedJob) -> JobOutcome:
        ran.append(claimed.job_id)
        finish_inputs(claimed, "archive")  # as the worker does with a finished job
        return JobOutcome.FINISHED

    service = Service(settings, run, waits_for=keeper.waits_for, presenters=Linker.from_settings(settings), clock=clock)
    inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": b'presenters = ["anna"]\n', ".ready": b""})
    inbox_job(settings, "other", {"lesson.wav": b"RIFF", "job.toml": b'presenters = ["zoe"]\n', ".ready": b""})
    keeper.scan()
    assert service.step(clock()).job_id == "other"  # an unknown name holds nothing: that video fails alone
    step = service.step(clock())
    assert step.action == "idle" and ran == ["other"]
    assert service.waiting["lesson"][0].startswith("presenters/anna.mp4: settling")
    assert read_waiting(settings.paths.state_dir)["lesson"] == list(service.waiting["lesson"])

    (folder / "anna.mp4.ready").touch()  # its copier says it is complete
    keeper.scan()
    assert service.step(clock()).job_id == "lesson"


# ---------------------------------------------------------------------------------------------- a file overwritten


def overwrite_in_place(path: Path, content: bytes) -> None:
    """Write ``content`` into the very file at ``path`` (truncated, same inode), as a copy "replacing" it over SMB
    does: not a new file renamed over it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def test_a_presenter_overwritten_in_place_fails_its_video_and_the_others_render(
    tmp_path: Path, media: Media, faceless: Path
) -> None:
    """A presenter's file is hard-linked into the job at the claim; a library file overwritten in place (same inode)
    changes that link too. Overwritten before its render (bob) or during it (anna), its video fails with
    PRESENTER_CHANGED naming the library file; carla, untouched, renders; no output is made of a changed file."""
    settings = make_settings(tmp_path)
    folder = library(settings)
    for name, video in (("anna", media.face_a), ("bob", media.face_b), ("carla", media.face_a)):
        shutil.copyfile(video, folder / f"{name}.mp4")
    candidate = inbox_job(
        settings, "lesson", {"lesson.wav": media.speech, "job.toml": b'presenters = ["anna", "bob", "carla"]\n'}
    )
    claimed = claim(candidate, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None
    record = read_links(claimed.path)
    assert record is not None and not any(p.copied for p in record.presenters)  # hard links: the same inodes
    bob_before = (folder / "bob.mp4").stat()
    overwrite_in_place(folder / "bob.mp4", faceless.read_bytes())  # after the claim, before its render
    assert (folder / "bob.mp4").stat().st_ino == bob_before.st_ino

    overwritten: list[str] = []

    def heartbeat(text: str) -> None:  # anna's library file is overwritten while her video renders
        if "anna.mp4 render" in text and not overwritten:
            overwrite_in_place(folder / "anna.mp4", media.face_b.read_bytes())
            overwritten.append(text)

    sessions = Sessions(settings)
    context = JobContext.from_settings(
        settings, session_for=sessions.get, should_stop=lambda: False, heartbeat=heartbeat
    )
    result = process_job(claimed, settings.paths.outbox, context)
    assert result.outcome is JobOutcome.FINISHED and overwritten
    status = read_status(layout.status_file(settings.paths.outbox / "lesson"))
    videos = {v.input: v for v in status.videos}
    assert [(v.presenter, v.state) for v in status.videos] == [("anna", "failed"), ("bob", "failed"), ("carla", "done")]
    for name in ("anna", "bob"):
        error = videos[f"{name}.mp4"].error
        assert error is not None and error.code == "PRESENTER_CHANGED", error
        assert error.message.startswith(f"presenters/{name}.mp4: the presenter '{name}' was overwritten"), error
        assert "renaming it over the old one" in error.hint and "heygemd retry" in error.hint, error
        assert str(settings.paths.state_dir) not in error.message + error.hint
    assert videos["bob.mp4"].progress == 0.0  # refused before its render began
    outputs = sorted(os.listdir(settings.paths.outbox / "lesson"))
    assert outputs == sorted(["carla.mp4", "carla.jpg", "status.json", "job.log"]), outputs  # nothing of anna or bob
    # nothing is lost: the library holds the new files, the archive the job's (the same inodes), for a retry
    assert (folder / "bob.mp4").read_bytes() == faceless.read_bytes()
    assert (folder / "anna.mp4").read_bytes() == media.face_b.read_bytes()
    archived = next((settings.paths.state_dir / "archive").glob("*/lesson")) / "input"
    assert sorted(os.listdir(archived)) == ["anna.mp4", "bob.mp4", "carla.mp4", "job.toml", "lesson.wav"]


def test_a_presenter_copied_into_the_job_is_its_own_and_renders_whatever_the_library_does(
    tmp_path: Path, media: Media, faceless: Path
) -> None:
    """Where the library is on another file system the presenter is copied: an overwrite in the library changes
    nothing in the job, and the copy (written at the claim, with its own times) is not taken for a changed file."""
    settings = make_settings(tmp_path)
    shm = Path("/dev/shm") / f"heygemd-test-{os.getpid()}"
    shm.mkdir()
    try:
        shutil.copyfile(media.face_a, shm / "anna.mp4")
        os.utime(shm / "anna.mp4", ns=(1, 1))  # a copy keeping an old time, as NAS clients do
        candidate = inbox_job(settings, "lesson", {"lesson.wav": media.speech, "job.toml": b'presenters = ["anna"]\n'})
        claimed = claim(candidate, settings.paths.state_dir, presenters=Linker(shm))
        assert claimed is not None
        record = read_links(claimed.path)
        assert record is not None and record.presenters[0].copied
        overwrite_in_place(shm / "anna.mp4", faceless.read_bytes())
        sessions = Sessions(settings)
        context = JobContext.from_settings(
            settings, session_for=sessions.get, should_stop=lambda: False, heartbeat=lambda _text: None
        )
        assert process_job(claimed, settings.paths.outbox, context).outcome is JobOutcome.FINISHED
        status = read_status(layout.status_file(settings.paths.outbox / "lesson"))
        assert [(v.presenter, v.state, v.error) for v in status.videos] == [("anna", "done", None)]
    finally:
        shutil.rmtree(shm)


def test_a_linked_file_matches_its_record_until_its_size_or_time_changes(tmp_path: Path) -> None:
    """The record is compared by size and by time to within a second (another host's mount of the NAS may keep
    less than nanoseconds); a copy always matches."""
    settings = make_settings(tmp_path)
    folder = library(settings)
    (folder / "anna.mp4").write_bytes(b"anna " * 100)
    os.utime(folder / "anna.mp4", ns=(10**18, 10**18))
    candidate = inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", "job.toml": b'presenters = ["anna"]\n'})
    claimed = claim(candidate, settings.paths.state_dir, presenters=Linker.from_settings(settings))
    assert claimed is not None
    record = read_links(claimed.path)
    assert record is not None
    anna = record.presenters[0]
    assert anna.identity is not None and (anna.identity.size, anna.identity.mtime_ns) == (500, 10**18)
    linked = claimed.folder / "anna.mp4"

    os.utime(folder / "anna.mp4", ns=(10**18, 10**18 + 999_999_900))  # as a mount keeping 100 ns would show it
    assert anna.matches(linked.stat())
    overwrite_in_place(folder / "anna.mp4", b"ANNA " * 100)  # the same size, written now
    assert not anna.matches(linked.stat())
    with InputFile.open(linked) as video, pytest.raises(PresenterChanged) as raised:
        anna.check(video)
    assert str(raised.value.path) == "presenters/anna.mp4"
    assert "500 bytes modified 2001-09-09 01:46:40 UTC then, 500 bytes modified" in raised.value.message
    assert anna.model_copy(update={"copied": True}).matches(linked.stat())
