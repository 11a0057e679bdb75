"""The worker against a hostile job folder: symbolic links (refused, never followed, targets untouched by archive
and delete), job-level errors naming the folder as the user dropped it, and heygemd's own temporary files that a
SIGKILL left behind (removed on resume and at the end, and nothing else). Stand-in renderer, real folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog.testing

from heygemd.daemon import claims, readiness
from heygemd.daemon.status import read_status
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.names import is_heygemd_temp, temp_name
from heygemd.pipeline.run import RenderResult
from tests.daemon.test_jobs import unblocked
from tests.daemon.test_worker import StandInSession


def claim_job(tmp_path: Path, files: dict[str, bytes | Path]) -> claims.ClaimedJob:
    """Claim inbox/lesson-01 made of ``files``: bytes are written, a Path becomes a symbolic link to it."""
    folder = tmp_path / "inbox" / "lesson-01"
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            os.symlink(content, folder / name)
        else:
            (folder / name).write_bytes(content)
    claimed = claims.claim(readiness.Candidate("lesson-01", folder), tmp_path / "inbox" / ".heygemd")
    assert claimed is not None
    return claimed


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """Another team's file elsewhere on the server, next to a folder of theirs."""
    folder = tmp_path / "other-team"
    (folder / "assets").mkdir(parents=True)
    (folder / "assets" / "plan.txt").write_text("do not touch")
    target = folder / "secret.mp4"
    target.write_bytes(b"their video")
    return target


def untouched(secret: Path) -> bool:
    plan = secret.parent / "assets" / "plan.txt"
    return secret.read_bytes() == b"their video" and plan.read_text() == "do not touch"


def test_a_linked_video_is_refused_the_job_goes_on_and_archiving_leaves_the_target(
    tmp_path: Path, secret: Path
) -> None:
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a", "talk.mp4": secret})
    session = StandInSession()
    result = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _e: session))  # type: ignore[arg-type, return-value]
    final = result.status
    assert result.outcome is JobOutcome.FINISHED and final is not None and final.state == "partial"
    assert session.rendered == ["a.mp4"], "the link's content must never be opened"
    talk = next(v for v in final.videos if v.input == "talk.mp4")
    assert talk.state == "failed" and talk.error is not None and talk.error.code == "UNSAFE_PATH"
    assert talk.error.message == f"lesson-01/talk.mp4: is a symbolic link to {secret}; it is not followed"
    assert "link" in talk.error.hint
    assert not (tmp_path / "outbox" / "lesson-01" / "talk.mp4").exists()
    archived = next((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson-01/input/talk.mp4"))
    assert archived.is_symlink() and untouched(secret)  # archived as the link it is


def test_delete_removes_links_never_their_targets(tmp_path: Path, secret: Path) -> None:
    claimed = claim_job(
        tmp_path, {"voice.wav": b"v", "a.mp4": b"a", "notes.txt": secret, "assets": secret.parent / "assets"}
    )
    session = StandInSession()
    context = JobContext(session_for=lambda _e: session, inputs_after="delete")  # type: ignore[arg-type, return-value]
    final = process_job(claimed, tmp_path / "outbox", context).status
    assert final is not None and final.state == "done" and final.ignored == ["assets/", "notes.txt"]
    assert not claimed.path.exists() and not any((tmp_path / "inbox" / ".heygemd" / "trash").iterdir())
    assert untouched(secret)


@pytest.mark.parametrize("linked", ["voice.wav", "job.toml"])
def test_a_linked_audio_or_job_toml_fails_the_job_naming_the_link_and_target(tmp_path: Path, linked: str) -> None:
    target = tmp_path / "elsewhere" / linked
    target.parent.mkdir()
    target.write_bytes(b'engine = "mouthwarp"\n' if linked == "job.toml" else b"RIFF")
    files: dict[str, bytes | Path] = {"voice.wav": b"v", "a.mp4": b"a"}
    files[linked] = target
    claimed = claim_job(tmp_path, files)
    session = StandInSession()
    result = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _e: session))  # type: ignore[arg-type, return-value]
    assert result.outcome is JobOutcome.FAILED and result.status is not None
    error = result.status.error
    assert error is not None and error.code == "UNSAFE_PATH"
    assert error.message == f"lesson-01/{linked}: is a symbolic link to {target}; it is not followed"
    assert session.rendered == [] and target.exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.mp4": b"a"}, "lesson-01/: no audio file in the job folder"),
        ({"voice.wav": b"v"}, "lesson-01/: no presenter video or image in the job folder"),
        (
            {"one.wav": b"1", "two.wav": b"2", "a.mp4": b"a"},
            'lesson-01/: several audio files in the job folder: "one.wav", "two.wav"',
        ),
        ({"voice.wav": b"v", "a.mp4": b"a", "job.toml": b"crf = 99\n"}, "lesson-01/job.toml: field 'crf': "),
    ],
)
def test_job_level_errors_name_the_job_folder_as_the_user_dropped_it(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    claimed = claim_job(tmp_path, files)  # type: ignore[arg-type]
    result = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _e: StandInSession()))  # type: ignore[arg-type, return-value]
    assert result.outcome is JobOutcome.FAILED and result.status is not None and result.status.error is not None
    assert result.status.error.message.startswith(message), result.status.error.message
    text = (tmp_path / "outbox" / "lesson-01" / "status.json").read_text(encoding="utf-8")
    assert ".heygemd" not in text and "claimed" not in json.loads(text)["error"]["message"]


def test_stale_temporaries_are_removed_on_resume_and_nothing_else(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a", "b.mp4": b"b"})
    out = tmp_path / "outbox" / "lesson-01"
    stopped = JobContext(session_for=lambda _e: StandInSession(), should_stop=lambda: True)  # type: ignore[arg-type, return-value]
    assert process_job(claimed, tmp_path / "outbox", stopped).outcome is JobOutcome.INTERRUPTED
    # What a SIGKILL in the middle of writes leaves: this and older heygemd versions' temp names ...
    stale = [
        ".status.json.tmp-4242-0a1b2c3d",
        temp_name("status.json"),
        temp_name("a.mp4"),
        ".a.jpg.partial.jpg",
        ".b.mp4.partial.mp4",
    ]
    for name in stale:
        (out / name).write_bytes(b"half")
    (claimed.path / temp_name("claim.json")).write_bytes(b"{")
    # ... and files that only look similar, which are not heygemd's to remove
    foreign = ["notes.tmp", ".status.json.bak", "status.json.tmp-1-2"]
    for name in foreign:
        (out / name).write_bytes(b"mine")
    assert all(is_heygemd_temp(n) for n in stale) and not any(is_heygemd_temp(n) for n in foreign)

    session = StandInSession()
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _e: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.state == "done"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".status.json.bak"]
    assert sorted({p.name for p in out.iterdir()} & set(foreign)) == sorted(foreign)
    assert read_status(out / "status.json").attempt == 2


def test_a_fifo_job_toml_fails_the_job_at_once_naming_it(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a"})
    os.mkfifo(claimed.folder / "job.toml")
    session = StandInSession()
    context = JobContext(session_for=lambda _e: session)  # type: ignore[arg-type, return-value]
    result = unblocked(claimed.folder / "job.toml", lambda: process_job(claimed, tmp_path / "outbox", context))
    assert result.outcome is JobOutcome.FAILED and result.status is not None and result.status.error is not None
    error = result.status.error
    assert (error.code, error.message) == (
        "NOT_A_FILE",
        "lesson-01/job.toml: is a named pipe (FIFO), not a regular file",
    )
    assert "regular files" in error.hint and session.rendered == []
    assert next((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson-01/input/job.toml")).is_fifo()


def test_an_output_name_is_checked_again_when_the_job_runs(tmp_path: Path) -> None:
    """A naming that slipped past the settings' check (a format field that renders as "/") writes nothing."""
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a"})
    slash = "{stem.translate.__doc__[223]}"
    session = StandInSession()
    context = JobContext(session_for=lambda _e: session, naming=f"..{slash}..{slash}{{stem}}.mp4")  # type: ignore[arg-type, return-value]
    result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.FAILED and result.status is not None and result.status.error is not None
    error = result.status.error
    assert error.code == "BAD_JOB" and error.message.startswith("lesson-01/: no output name for a.mp4: naming "), error
    assert "attribute or index" in error.message and "{stem}" in error.hint
    assert session.rendered == [] and not (tmp_path / "a.mp4").exists()


def test_output_names_of_long_presenter_names_are_cut_to_fit(tmp_path: Path) -> None:
    stem = "ö" * 125 + "x"  # with .mp4: 255 bytes, as long as a name can be
    naming = b'naming = "{stem}-lipsync.mp4"\n'
    claimed = claim_job(tmp_path, {"voice.wav": b"v", f"{stem}.mp4": b"a", f"{stem}.mov": b"b", "job.toml": naming})
    session = StandInSession()
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _e: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.state == "done", final
    outputs = [v.output for v in final.videos]
    assert outputs == ["ö" * 121 + "-lipsync.mp4", "ö" * 120 + "-lipsync-2.mp4"]  # 254 bytes each
    assert sorted(p.name for p in (tmp_path / "outbox" / "lesson-01").glob("*.mp4")) == sorted(outputs)


def test_a_linked_archive_pauses_the_job_with_its_inputs_still_claimed(tmp_path: Path, secret: Path) -> None:
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a"})
    (tmp_path / "inbox" / ".heygemd" / "archive").symlink_to(secret.parent)
    session = StandInSession()
    context = JobContext(session_for=lambda _e: session, inputs_after="archive")  # type: ignore[arg-type, return-value]
    result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.PAUSED
    assert claimed.folder.is_dir() and sorted(p.name for p in secret.parent.iterdir()) == ["assets", "secret.mp4"]
    assert untouched(secret)


class OutboxOutage(StandInSession):
    """Renders, then the outbox's share goes away (the job's folder vanishes) until the test brings it back."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder, self.away = folder, folder.with_name(folder.name + ".unmounted")
        self.outages = 1

    def render(self, video: Path, audio: object, output: Path, **kwargs: object) -> RenderResult:
        result = super().render(video, audio, output, **kwargs)  # type: ignore[arg-type]
        if self.outages:
            self.outages -= 1
            self.folder.rename(self.away)
        return result

    def back(self) -> None:
        self.away.rename(self.folder)


def test_an_outbox_that_refuses_writes_mid_job_pauses_it_and_never_fails_it(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, {"voice.wav": b"v", "a.mp4": b"a", "b.mp4": b"b"})
    session = OutboxOutage(tmp_path / "outbox" / "lesson-01")
    context = JobContext(session_for=lambda _e: session)  # type: ignore[arg-type, return-value]
    with structlog.testing.capture_logs() as logs:
        result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.PAUSED
    assert not [e for e in logs if e["event"].endswith(".crashed") or e.get("code") == "INTERNAL"], logs
    paused = [e for e in logs if e["event"] == "job.paused"]
    assert paused and paused[0]["code"] == "OUTBOX_UNAVAILABLE", logs
    assert claimed.folder.is_dir(), "the inputs stay claimed while the outbox is away"
    session.back()  # the share is back: the job is tried again and ends as if nothing happened
    again = process_job(claimed, tmp_path / "outbox", context)
    final = again.status
    assert again.outcome is JobOutcome.FINISHED and final is not None and final.state == "done", final
    assert final.error is None and all(v.error is None for v in final.videos)
