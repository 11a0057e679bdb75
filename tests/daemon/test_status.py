"""status.json: model round trip, shipped schema, state derivation, atomic writes with retries, tables."""

from __future__ import annotations

import errno
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from heygemd.daemon.status import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    AudioStatus,
    ErrorStatus,
    JobStatus,
    VideoStatus,
    job_state_from_videos,
    overall_progress,
    read_status,
    write_status,
)
from heygemd.errors import NoFace
from heygemd.status_view import format_status_detail, format_status_table

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def sample() -> JobStatus:
    return JobStatus(
        job_id="我的 任务-2",
        job_name="我的 任务",
        state="processing",
        claimed=T0,
        started=T0,
        engine="wav2lip",
        engine_identity="sha256:abc",
        audio=AudioStatus(file="讲话.wav", duration_s=12.5),
        videos=[
            VideoStatus(
                input="a.mp4",
                state="done",
                progress=1.0,
                frames_done=300,
                frames_total=300,
                face_ratio=0.98,
                output="a.mp4",
                poster="a.jpg",
                timings={"detect": 1.5, "total": 9.0},
            ),
            VideoStatus(
                input="b.mp4", state="failed", error=ErrorStatus.from_exception(NoFace("no face found", path="b.mp4"))
            ),
            VideoStatus(input="c.png", state="processing", progress=0.5, frames_done=150, frames_total=300),
        ],
        ignored=["notes.txt"],
    ).recomputed()


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    written = write_status(path, sample(), now=lambda: T0)
    assert written.updated == T0
    back = read_status(path)
    assert back == written
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["claimed"] in ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00+00:00")
    assert raw["videos"][1]["error"]["code"] == "NO_FACE" and raw["videos"][1]["error"]["hint"]
    assert raw["schema_version"] == SCHEMA_VERSION == 3 and raw["waiting"] is None and raw["pid"] == os.getpid()


def test_reader_ignores_fields_from_newer_versions(tmp_path: Path) -> None:
    raw = json.loads(sample().model_dump_json())
    raw["some_future_field"] = {"x": 1}
    path = tmp_path / "status.json"
    path.write_text(json.dumps(raw))
    assert read_status(path).job_id == "我的 任务-2"


def test_shipped_schema_is_in_sync() -> None:
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == JobStatus.model_json_schema()


def test_written_status_validates_against_schema(tmp_path: Path) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    path = tmp_path / "status.json"
    write_status(path, sample())
    jsonschema.Draft202012Validator(schema).validate(json.loads(path.read_text(encoding="utf-8")))
    bad = json.loads(path.read_text(encoding="utf-8"))
    bad["state"] = "exploded"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["done", "done"], "done"),
        (["done", "failed"], "partial"),
        (["failed", "failed"], "failed"),
        (["done", "processing"], "processing"),
        (["pending", "failed"], "processing"),
        (["done", "cancelled"], "cancelled"),
        (["cancelled", "failed"], "cancelled"),
        (["cancelled", "pending"], "processing"),
        ([], "failed"),
    ],
)
def test_job_state_from_videos(states: list[str], expected: str) -> None:
    assert job_state_from_videos([VideoStatus(input=f"{i}.mp4", state=s) for i, s in enumerate(states)]) == expected


def test_overall_progress_and_recomputed() -> None:
    vids = [
        VideoStatus(input="a", state="done"),
        VideoStatus(input="b", state="failed"),
        VideoStatus(input="c", state="processing", progress=0.5),
        VideoStatus(input="d"),
    ]
    assert overall_progress(vids) == pytest.approx(2.5 / 4)
    s = JobStatus(job_id="j", job_name="j", state="processing", videos=vids).recomputed()
    assert s.state == "processing" and s.progress == pytest.approx(0.625)
    vids[2].state, vids[3].state = "done", "done"
    s = JobStatus(job_id="j", job_name="j", state="processing", videos=vids).recomputed()
    assert s.state == "partial" and s.progress == 1.0
    failed = s.model_copy(update={"error": ErrorStatus(code="BAD_JOB", message="m")}).recomputed()
    assert failed.state == "failed"
    vids[2].state, vids[3].state, vids[3].progress = "cancelled", "cancelled", 0.5
    cancelled = JobStatus(job_id="j", job_name="j", state="processing", videos=vids).recomputed()
    assert cancelled.state == "cancelled" and cancelled.progress == pytest.approx(3 / 4), "what was done, not 100%"


def test_progress_is_validated() -> None:
    with pytest.raises(ValueError):
        VideoStatus(input="a", progress=1.5)
    with pytest.raises(ValueError):
        JobStatus(job_id="j", job_name="j", claimed=datetime(2026, 1, 1))  # naive time: not UTC-aware


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    for _ in range(3):
        write_status(path, sample())
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


class FlakyReplace:
    """os.replace that refuses the first ``failures`` calls like SMB does while a client has the file open."""

    def __init__(self, failures: int, err: int = errno.EACCES) -> None:
        self.failures, self.err, self.calls = failures, err, 0

    def __call__(self, src, dst) -> None:  # noqa: ANN001
        self.calls += 1
        if self.calls <= self.failures:
            raise PermissionError(self.err, os.strerror(self.err), str(dst))
        os.replace(src, dst)


def test_replace_retried_until_it_works(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text("old")
    replace, sleeps = FlakyReplace(2), []
    write_status(path, sample(), replace=replace, sleep=sleeps.append)
    assert replace.calls == 3 and sleeps == [0.05, 0.1]
    assert read_status(path).job_id == "我的 任务-2"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_replace_gives_up_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text("old")
    replace = FlakyReplace(100)
    with pytest.raises(PermissionError):
        write_status(path, sample(), replace=replace, sleep=lambda s: None, attempts=4)
    assert replace.calls == 4
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_non_retryable_error_is_raised_at_once(tmp_path: Path) -> None:
    def replace(src, dst) -> None:  # noqa: ANN001
        calls.append(dst)
        raise OSError(errno.ENOSPC, "No space left on device")

    calls: list[object] = []
    with pytest.raises(OSError) as info:
        write_status(tmp_path / "status.json", sample(), replace=replace, sleep=lambda s: None)
    assert info.value.errno == errno.ENOSPC and len(calls) == 1
    assert list(tmp_path.iterdir()) == []


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, sample())
    done = threading.Event()
    bad: list[Exception] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not done.is_set() or reads == 0:
            try:
                read_status(path)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                bad.append(exc)
            reads += 1

    t = threading.Thread(target=reader)
    t.start()
    status = sample()
    for i in range(40):
        status = status.model_copy(update={"ignored": [f"file{n}.txt" for n in range(i * 10)]})
        write_status(path, status)
    done.set()
    t.join(10)
    assert bad == [] and reads > 0
    assert len(read_status(path).ignored) == 390


def test_table_has_the_numbers() -> None:
    a = sample().model_copy(update={"updated": T0})
    b = JobStatus(
        job_id="second",
        job_name="second",
        state="done",
        progress=1.0,
        updated=T0,
        videos=[VideoStatus(input="x.mp4", state="done")],
    )
    text = format_status_table([a, b])
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["JOB", "STATE"]
    row_a = next(line for line in lines if line.startswith("我的 任务-2"))
    assert "processing" in row_a and "83%" in row_a and "1/1/3" in row_a and "2026-05-01 12:00:00Z" in row_a
    row_b = next(line for line in lines if line.startswith("second"))
    assert "done" in row_b and "100%" in row_b and "1/0/1" in row_b
    # columns line up even with double-width characters: STATE starts at the same display column
    assert row_b.index("done") == lines[0].index("STATE")
    assert format_status_table([]) == "no jobs\n"


def test_detail_lists_videos_errors_and_hints() -> None:
    text = format_status_detail(sample())
    assert "我的 任务-2" in text and "(我的 任务)" in text and "wav2lip" in text and "notes.txt" in text
    b_line = next(line for line in text.splitlines() if line.startswith("b.mp4 "))
    assert "failed" in b_line
    assert "b.mp4: [NO_FACE] b.mp4: no face found" in text
    assert "hint: " + NoFace.default_hint in text
    c_line = next(line for line in text.splitlines() if line.startswith("c.png"))
    assert "50%" in c_line and "150/300" in c_line


def test_a_status_planted_as_a_link_or_fifo_in_the_outbox_is_not_read_and_blocks_nothing(tmp_path: Path) -> None:
    """The outbox is on a share: a link where a job's status.json goes is not followed (a file outside the
    outbox is not read), a FIFO is not waited on, and `heygemd status` lists the other jobs."""
    from heygemd.status_view import show_status

    outbox = tmp_path / "outbox"
    elsewhere = tmp_path / "elsewhere.json"
    write_status(elsewhere, sample().model_copy(update={"job_id": "secret"}))
    for name in ("good", "linked", "piped"):
        (outbox / name).mkdir(parents=True)
    write_status(outbox / "good" / "status.json", sample().model_copy(update={"job_id": "good"}))
    (outbox / "linked" / "status.json").symlink_to(elsewhere)
    os.mkfifo(outbox / "piped" / "status.json")

    for planted in ("linked", "piped"):
        with pytest.raises(ValueError, match="status.json"):
            read_status(outbox / planted / "status.json")
    text = show_status(outbox, None, None)
    assert "good" in text and "secret" not in text
