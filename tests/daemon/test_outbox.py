"""Outbox folders per job, and archiving / deleting / keeping inputs after a job."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from heygemd.daemon import outbox
from heygemd.daemon.claims import claim, claimed_jobs
from heygemd.daemon.outbox import empty_trash, finish_inputs, outbox_dir_for, prune_archive
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.status import JobStatus, write_status
from heygemd.errors import ConfigError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def claimed(tmp_path: Path, name: str = "job", when: datetime = T0):
    folder = tmp_path / "inbox" / name
    folder.mkdir(parents=True)
    (folder / "voice.wav").write_bytes(b"x")
    job = claim(Candidate(name, folder), tmp_path / "state", now=lambda: when)
    assert job is not None
    return job


def test_outbox_dir_new_and_resumed(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    first = outbox_dir_for(outbox, "talk", T0)
    assert first == outbox / "talk" and first.is_dir()
    assert outbox_dir_for(outbox, "talk", T0) == first  # still empty: reused
    write_status(first / "status.json", JobStatus(job_id="talk", job_name="talk", claimed=T0))
    (first / "talk.mp4").write_bytes(b"out")
    assert outbox_dir_for(outbox, "talk", T0) == first  # same claim: a restart resumes into it


def test_outbox_dir_never_reuses_another_jobs_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    other = outbox_dir_for(outbox, "talk", T0)
    write_status(other / "status.json", JobStatus(job_id="talk", job_name="talk", claimed=T0))
    later = T0 + timedelta(hours=1)
    second = outbox_dir_for(outbox, "talk", later)
    assert second == outbox / "talk-2"
    write_status(second / "status.json", JobStatus(job_id="talk", job_name="talk", claimed=later))
    (outbox / "talk-3").mkdir()
    (outbox / "talk-3" / "someone's file.mp4").write_bytes(b"?")  # unknown origin, no status.json
    assert outbox_dir_for(outbox, "talk", later) == outbox / "talk-2"
    assert outbox_dir_for(outbox, "talk", later + timedelta(hours=1)) == outbox / "talk-4"


def test_finish_inputs_archive(tmp_path: Path) -> None:
    job = claimed(tmp_path)
    target = finish_inputs(job, "archive", now=T0)
    assert target == tmp_path / "state" / "archive" / "2026-05-01" / "job"
    assert (target / "input" / "voice.wav").is_file() and (target / "claim.json").is_file()
    assert claimed_jobs(tmp_path / "state") == []
    # a second job with the same id archived the same day does not overwrite the first
    job2 = claimed(tmp_path, "job")
    assert finish_inputs(job2, "archive", now=T0) == target.with_name("job-2")


def test_finish_inputs_delete_and_keep(tmp_path: Path) -> None:
    a, b = claimed(tmp_path, "a"), claimed(tmp_path, "b")
    assert finish_inputs(a, "delete") is None and not a.path.exists()
    kept = finish_inputs(b, "keep")
    assert kept == tmp_path / "state" / "kept" / "b" and (kept / "input" / "voice.wav").is_file()
    assert claimed_jobs(tmp_path / "state") == []
    with pytest.raises(ValueError):
        finish_inputs(claimed(tmp_path, "c"), "shred")  # type: ignore[arg-type]


def test_a_delete_cut_short_never_leaves_a_half_job_in_claimed(tmp_path: Path, monkeypatch) -> None:
    job = claimed(tmp_path, "a")

    def killed_halfway(path: Path) -> None:  # the process dies during the delete
        raise KeyboardInterrupt

    monkeypatch.setattr(outbox, "remove_tree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        finish_inputs(job, "delete")
    monkeypatch.undo()
    assert claimed_jobs(tmp_path / "state") == []  # nothing to "resume": it had left claimed/ first
    assert list((tmp_path / "state" / "trash").iterdir())
    empty_trash(tmp_path / "state")
    assert not list((tmp_path / "state" / "trash").iterdir())


def test_prune_archive(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for day in ["2026-04-01", "2026-04-29", "2026-04-30", "not-a-date"]:
        (state / "archive" / day / "job").mkdir(parents=True)
    now = datetime(2026, 5, 2, 0, 0, tzinfo=timezone.utc)
    assert prune_archive(state, 0, now) == []  # 0 keeps forever
    removed = prune_archive(state, 2, now)
    # 2026-04-29 ended 2026-04-30 00:00, two days before now; 2026-04-30 ended one day before
    assert [p.name for p in removed] == ["2026-04-01", "2026-04-29"]
    assert sorted(p.name for p in (state / "archive").iterdir()) == ["2026-04-30", "not-a-date"]
    assert prune_archive(tmp_path / "no-state", 2, now) == []


@pytest.mark.parametrize(("inputs_after", "folder"), [("archive", "archive"), ("keep", "kept"), ("delete", "trash")])
def test_inputs_never_go_through_a_linked_state_folder(tmp_path: Path, inputs_after: str, folder: str) -> None:
    job = claimed(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "state" / folder).symlink_to(outside)
    with pytest.raises(ConfigError, match=f"{folder}: is a symbolic link to {outside}"):
        finish_inputs(job, inputs_after)  # type: ignore[arg-type]
    assert list(outside.iterdir()) == [] and (job.folder / "voice.wav").is_file()


def test_trash_and_archive_cleanup_never_delete_through_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    outside = tmp_path / "outside"
    (outside / "2026-01-01" / "someones-files").mkdir(parents=True)
    (state / "trash").symlink_to(outside)
    (state / "archive").symlink_to(outside)
    empty_trash(state)
    assert prune_archive(state, 1, datetime(2026, 5, 2, tzinfo=timezone.utc)) == []
    assert (outside / "2026-01-01" / "someones-files").is_dir()


def test_trash_and_archive_cleanup_remove_folders_of_any_depth(tmp_path: Path, nested) -> None:
    state = tmp_path / "state"
    nested(state / "trash" / "deleted-job", 1100)
    nested(state / "archive" / "2026-01-01" / "old-job", 1100)
    (state / "trash" / "link").symlink_to(tmp_path)
    empty_trash(state)
    assert prune_archive(state, 1, datetime(2026, 5, 2, tzinfo=timezone.utc)) == [state / "archive" / "2026-01-01"]
    assert [p.name for p in (state / "trash").iterdir()] == ["link"]  # not heygemd's: left alone, never followed
    assert list((state / "archive").iterdir()) == [] and (tmp_path / "state").is_dir()


def test_archived_inputs_are_found_by_their_claim_never_through_a_link(tmp_path: Path) -> None:
    """Two jobs claimed as ``job`` on the same day: the archive holds ``job`` and ``job-2``; each job's status
    finds its own claim folder (by claim.json), a kept one too, and a planted link is never followed."""
    first = claimed(tmp_path)
    finish_inputs(first, "archive", now=T0)
    second = claimed(tmp_path, when=T0 + timedelta(hours=1))
    assert second.job_id == "job"  # free again once the first left claimed/
    second_archive = finish_inputs(second, "archive", now=T0)
    assert second_archive is not None and second_archive.name == "job-2"
    state = tmp_path / "state"
    elsewhere = tmp_path / "elsewhere" / "job-3"
    (elsewhere / "input").mkdir(parents=True)
    (elsewhere / "claim.json").write_text(
        f'{{"job_id": "job", "name": "job", "claimed_at": "{(T0 + timedelta(hours=2)).isoformat()}", '
        '"host": "h", "pid": 1}'
    )
    (second_archive.parent / "job-3").symlink_to(elsewhere)

    def status(when: datetime) -> JobStatus:
        return JobStatus(job_id="job", job_name="job", claimed=when)

    assert outbox.archived_inputs(state, status(T0)) == second_archive.parent / "job"
    assert outbox.archived_inputs(state, status(T0 + timedelta(hours=1))) == second_archive
    assert outbox.archived_inputs(state, status(T0 + timedelta(hours=2))) is None, "the link is not followed"
    kept = claimed(tmp_path, "other", when=T0)
    assert outbox.archived_inputs(state, JobStatus(job_id="other", job_name="other", claimed=T0)) is None
    assert finish_inputs(kept, "keep") == outbox.archived_inputs(
        state, JobStatus(job_id="other", job_name="other", claimed=T0)
    )
