"""The worker's policy at its boundaries, with a stand-in renderer: what happens to a job when a video fails,
when the disk is full, and when it is tried again. (The real renderer is exercised by test_daemon_process.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog.testing

from heygemd.daemon import claims, readiness
from heygemd.daemon.lifecycle import StopNow
from heygemd.daemon.status import read_status
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import DiskFull, Interrupted, NoFace
from heygemd.fsutil import InputFile
from heygemd.pipeline.run import RenderResult


@dataclass
class _Audio:
    duration: float = 2.0


@dataclass
class _Engine:
    identity: str = "stand-in-1"


@dataclass
class StandInSession:
    """Renders by writing a small file; ``failures`` maps a video name to the errors its next renders raise."""

    failures: dict[str, list[BaseException]] = field(default_factory=dict)
    rendered: list[str] = field(default_factory=list)
    engine_name: str = "stand-in"
    engine: _Engine = field(default_factory=_Engine)

    def audio(self, path: Path, **_: object) -> _Audio:
        return _Audio()

    def configure(self, overrides: object = None) -> dict[str, int | float | bool]:
        return {}

    def render(self, video: InputFile, audio: _Audio, output: Path, **_: object) -> RenderResult:
        pending = self.failures.get(video.name)
        if pending:
            raise pending.pop(0)
        output.write_bytes(b"video")
        self.rendered.append(video.name)
        return RenderResult(
            output=output,
            poster=None,
            frames=50,
            fps=25.0,
            face_ratio=1.0,
            detector="stand-in",
            cached_faces=False,
            timings={"total": 0.1},
        )

    def release(self) -> None:
        pass


def claim_job(tmp_path: Path, files: list[str]) -> claims.ClaimedJob:
    folder = tmp_path / "inbox" / "lesson"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"x")
    claimed = claims.claim(readiness.Candidate("lesson", folder), tmp_path / "inbox" / ".heygemd")
    assert claimed is not None
    return claimed


def test_a_full_disk_pauses_the_job_and_a_retry_finishes_only_what_is_left(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    session = StandInSession(failures={"b.mp4": [DiskFull("no space left on device", path=tmp_path / "outbox")]})
    context = JobContext(session_for=lambda _engine: session)  # type: ignore[arg-type, return-value]

    assert process_job(claimed, tmp_path / "outbox", context).outcome is JobOutcome.PAUSED
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert status.state == "processing"
    a, b = status.videos
    assert a.state == "done" and b.state == "pending"
    assert b.error is not None and b.error.code == "DISK_FULL"
    assert claimed.folder.is_dir(), "inputs must stay claimed while the job is paused"

    result = process_job(claimed, tmp_path / "outbox", context)
    final = result.status
    assert result.outcome is JobOutcome.FINISHED
    assert final is not None and final.state == "done" and final.attempt == 2
    assert session.rendered == ["a.mp4", "b.mp4"]  # a.mp4 was not redone
    assert final.videos[1].error is None
    assert not claimed.path.exists(), "inputs leave claimed/ once the job is done"


def test_a_bug_outside_the_jobs_own_boundary_fails_the_job_and_sets_its_inputs_aside(tmp_path: Path) -> None:
    """process_job never raises: the one per-job boundary of the single host and the farm alike."""
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])
    session = StandInSession()
    # a value no setting allows: moving the inputs after the job raises ValueError, outside the job's own boundary
    context = JobContext(session_for=lambda _engine: session, inputs_after="shred")  # type: ignore[arg-type, return-value]
    with structlog.testing.capture_logs() as logs:
        result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.FAILED
    assert [e["event"] for e in logs if e["event"].startswith("job.") and e["log_level"] == "error"] == ["job.crashed"]
    assert not claimed.path.exists(), "set aside: never resumed (nor republished) for ever"
    assert list((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson/input/voice.wav"))


def test_stops_pass_every_failure_boundary(tmp_path: Path) -> None:
    """A stop is no error: Interrupted ends the job as interrupted, StopNow (a second signal) leaves process_job
    at once; neither is recorded as a failed video, and the job stays claimed for the next start."""
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    stops: dict[str, list[BaseException]] = {"a.mp4": [Interrupted("stopped")], "b.mp4": [StopNow("SIGTERM")]}
    session = StandInSession(failures=stops)
    context = JobContext(session_for=lambda _engine: session)  # type: ignore[arg-type, return-value]
    result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.INTERRUPTED and result.status is not None
    assert [v.state for v in result.status.videos] == ["pending", "pending"]
    with pytest.raises(StopNow):
        process_job(claimed, tmp_path / "outbox", context)
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert [v.state for v in status.videos] == ["done", "processing"] and status.error is None
    assert claimed.folder.is_dir(), "the job stays claimed: the next start resumes it"


def test_a_failing_video_fails_alone_and_the_job_is_partial(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    session = StandInSession(failures={"a.mp4": [NoFace("no face in any frame", path="a.mp4")]})
    context = JobContext(session_for=lambda _engine: session, inputs_after="delete")  # type: ignore[arg-type, return-value]
    final = process_job(claimed, tmp_path / "outbox", context).status
    assert final is not None and final.state == "partial"
    assert final.videos[0].state == "failed" and final.videos[0].error.code == "NO_FACE"
    assert final.videos[1].state == "done"
    archived = list((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson/input/a.mp4"))
    assert archived, "inputs of a partial job are archived, never deleted, even with inputs_after = delete"


def test_outputs_differing_only_in_case_get_distinct_names(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "Intro.mov", "intro.mp4"])
    session = StandInSession()
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _engine: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.state == "done"
    outputs = [v.output for v in final.videos]
    assert len({o.casefold() for o in outputs}) == 2, outputs  # one would overwrite the other on an SMB share


def test_errors_name_files_inside_the_job_not_the_internal_claim_folder(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])
    session = StandInSession(failures={"a.mp4": [NoFace("no face in any frame", path=claimed.folder / "a.mp4")]})
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _engine: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None
    message = final.videos[0].error.message
    assert message.startswith("lesson/a.mp4: ") and ".heygemd" not in message


def test_render_warnings_reach_status_json_naming_files_inside_the_job(tmp_path: Path) -> None:
    from heygemd.errors import ErrorInfo

    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])

    class WarningSession(StandInSession):
        def render(self, video: InputFile, audio: _Audio, output: Path, **kwargs: object) -> RenderResult:
            result = super().render(video, audio, output, **kwargs)
            warning = ErrorInfo("PROFILE_VIEW", f"{video.path}: the face is turned to the side", "use wav2lip")
            return RenderResult(**{**result.__dict__, "warnings": (warning,)})

    session = WarningSession()
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _engine: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.state == "done"
    (warning,) = final.videos[0].warnings
    assert warning.code == "PROFILE_VIEW" and warning.hint == "use wav2lip"
    assert warning.message == "lesson/a.mp4: the face is turned to the side"
    on_disk = read_status(tmp_path / "outbox" / final.job_id / "status.json")
    assert on_disk.videos[0].warnings == final.videos[0].warnings


def test_the_first_frame_and_the_caches_found_are_recorded_for_the_metrics(tmp_path: Path) -> None:
    from heygemd.daemon.status import utc_now
    from heygemd.pipeline.run import VideoProgress

    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    moments: list[object] = []

    class ProgressSession(StandInSession):
        def render(self, video: InputFile, audio: _Audio, output: Path, **kwargs: object) -> RenderResult:
            report = kwargs["on_progress"]
            report(VideoProgress("detect", 10, 50, 0.1))  # type: ignore[operator]
            moments.append(utc_now())
            report(VideoProgress("render", 8, 50, 0.3))  # type: ignore[operator]
            result = super().render(video, audio, output, **kwargs)
            return RenderResult(**{**result.__dict__, "cached_faces": video.name == "b.mp4", "cached_presenter": False})

    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _engine: ProgressSession())).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.state == "done"
    assert final.first_frame is not None and final.claimed is not None
    assert final.claimed <= moments[0] <= final.first_frame <= moments[1], "the first frame of the job, not the last"
    assert [v.cached for v in final.videos] == [
        {"faces": False, "presenter": False},
        {"faces": True, "presenter": False},
    ]


def test_a_job_naming_an_engine_not_installed_fails_as_a_whole_with_the_message_of_the_submission(
    tmp_path: Path,
) -> None:
    """A job from the share names musetalk, whose files are not there: it fails as a whole with the message a
    submission through the API or the form gets, its videos not started, its hint naming where its files are kept."""
    from heygemd.control import Control
    from heygemd.daemon.lifecycle import Sessions
    from heygemd.errors import EngineNotInstalled
    from heygemd.settings import EngineSettings, PathsSettings, Settings

    claimed = claim_job(tmp_path, ["voice.wav", "anna.mp4", "bob.mp4"])
    (claimed.folder / "job.toml").write_text('engine = "musetalk"\n')
    inbox = tmp_path / "inbox"
    settings = Settings(
        paths=PathsSettings(inbox=inbox, outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp"),
    )
    context = JobContext.from_settings(
        settings, session_for=Sessions(settings).get, should_stop=lambda: False, heartbeat=lambda _text: None
    )
    result = process_job(claimed, tmp_path / "outbox", context)
    final = result.status
    assert result.outcome is JobOutcome.FAILED and final is not None and final.error is not None
    with pytest.raises(EngineNotInstalled) as submitted:
        Control(settings).check_engine("musetalk")
    assert final.error.code == "ENGINE_NOT_INSTALLED" and final.error.message == submitted.value.message
    assert final.error.message.startswith("engine 'musetalk' is not installed: models/musetalk/ lacks ")
    assert [(v.input, v.state) for v in final.videos] == [("anna.mp4", "not_started"), ("bob.mp4", "not_started")]
    assert final.state == "failed" and final.progress == 1.0
    (archived,) = (inbox / ".heygemd" / "archive").glob("*/lesson")
    assert f"The job's files are kept in inbox/.heygemd/archive/{archived.parent.name}/lesson/input/ " in (
        final.error.hint
    )
    assert final.error.hint.startswith("Copy MuseTalk's model folders into models/musetalk/")
    assert (archived / "input" / "job.toml").is_file() and read_status(
        tmp_path / "outbox" / "lesson" / "status.json"
    ) == final


def test_a_whole_job_failure_after_its_videos_were_listed_leaves_none_pending(tmp_path: Path) -> None:
    """The audio cannot be decoded (a job-level error once the videos are listed): no video stays pending under the
    failed job, each is not started."""
    from heygemd.errors import DecodeError

    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    session = StandInSession()

    def broken_audio(_audio: InputFile, **_: object) -> _Audio:
        raise DecodeError("the audio cannot be decoded", path=claimed.folder / "voice.wav")

    session.audio = broken_audio  # type: ignore[method-assign]
    final = process_job(claimed, tmp_path / "outbox", JobContext(session_for=lambda _engine: session)).status  # type: ignore[arg-type, return-value]
    assert final is not None and final.error is not None and final.error.code == "DECODE_FAILED"
    assert final.error.message.startswith("lesson/voice.wav: ")
    assert [v.state for v in final.videos] == ["not_started", "not_started"]
    assert "The job's files are kept in inbox/.heygemd/archive/" in final.error.hint


def test_a_library_presenter_renders_with_its_own_engine_face_and_loop_mode_unless_the_job_names_them(
    tmp_path: Path,
) -> None:
    from heygemd.daemon.presenter_links import Linker

    library = tmp_path / "presenters"
    library.mkdir()
    (library / "anna.mp4").write_bytes(b"anna")
    (library / "anna.toml").write_text('engine = "wav2lip"\nface = "left"\nloop_mode = "loop"\n')
    (library / "bob.mp4").write_bytes(b"bob")
    folder = tmp_path / "inbox" / "lesson"
    folder.mkdir(parents=True)
    (folder / "voice.wav").write_bytes(b"x")
    (folder / "own.mp4").write_bytes(b"x")
    (folder / "job.toml").write_text('presenters = ["anna", "bob"]\nlatentsync_steps = 7\n')
    claimed = claims.claim(
        readiness.Candidate("lesson", folder), tmp_path / "inbox" / ".heygemd", presenters=Linker(library)
    )
    assert claimed is not None

    calls: list[tuple[str, str, dict[str, object]]] = []

    class Recording(StandInSession):
        def configure(self, overrides: object = None) -> dict[str, int | float | bool]:
            calls.append((self.engine_name, "configure", dict(overrides or {})))  # type: ignore[call-overload]
            return {}

        def audio(self, path: Path, **_: object) -> _Audio:
            calls.append((self.engine_name, "audio", {}))
            return _Audio()

        def render(self, video: InputFile, audio: _Audio, output: Path, **kwargs: object) -> RenderResult:
            calls.append((self.engine_name, video.name, {k: kwargs[k] for k in ("face", "loop_mode")}))
            return super().render(video, audio, output)

    sessions = {None: Recording(engine_name="mouthwarp"), "wav2lip": Recording(engine_name="wav2lip")}
    context = JobContext(session_for=lambda engine: sessions[engine])  # type: ignore[arg-type,index]
    assert process_job(claimed, tmp_path / "outbox", context).outcome is JobOutcome.FINISHED
    assert calls == [
        ("mouthwarp", "audio", {}),
        ("mouthwarp", "configure", {"latentsync_steps": 7}),
        ("wav2lip", "configure", {"latentsync_steps": 7}),  # the job's settings on the presenter's engine too
        ("wav2lip", "audio", {}),  # the job's audio once more, for the presenter's engine
        ("wav2lip", "anna.mp4", {"face": "left", "loop_mode": "loop"}),
        ("mouthwarp", "bob.mp4", {"face": None, "loop_mode": None}),
        ("mouthwarp", "own.mp4", {"face": None, "loop_mode": None}),
    ]
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert [(v.input, v.presenter, v.engine) for v in status.videos] == [
        ("anna.mp4", "anna", "wav2lip"),
        ("bob.mp4", "bob", None),
        ("own.mp4", None, None),
    ]

    calls.clear()
    folder = tmp_path / "inbox" / "lesson-2"
    folder.mkdir()
    (folder / "voice.wav").write_bytes(b"x")
    (folder / "job.toml").write_text('presenters = ["anna"]\nengine = "mouthwarp"\nloop_mode = "pingpong"\n')
    claimed = claims.claim(
        readiness.Candidate("lesson-2", folder), tmp_path / "inbox" / ".heygemd", presenters=Linker(library)
    )
    assert claimed is not None
    sessions["mouthwarp"] = sessions[None]
    assert process_job(claimed, tmp_path / "outbox", context).outcome is JobOutcome.FINISHED
    assert calls == [
        ("mouthwarp", "audio", {}),
        ("mouthwarp", "configure", {}),  # the job names no engine setting: the daemon's own
        ("mouthwarp", "anna.mp4", {"face": "left", "loop_mode": "pingpong"}),
    ]
