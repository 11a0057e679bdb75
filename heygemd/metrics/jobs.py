"""The jobs' metrics, computed when they are scraped from what is on disk: the outbox's status.json files, the
claims in the state folder, the inbox, the cache folders.

status.json is the truth about a job and records everything a video's metrics need (its state, error code,
timings, the audio's length that is the output's, when it finished, which caches it found; the job's claim and
first frame), whichever process or farm worker rendered it. So any process that sees the outbox serves complete
metrics for a single host and a farm alike, and a restart loses nothing: the counts start again from the files.

A look at the folders is kept for ``MAX_AGE_S`` (scrapes in between are answered from it); a status.json is parsed
again only when its inode, mtime or size changed. Counters and histograms only grow while the process runs: each
finished video (and job error, and first frame) is counted once, by its identity (the job's folder, the video's
input and its finish time); a job deleted from the outbox keeps what it added. A process that starts anew counts
what the outbox holds then (jobs deleted while it was down are not in it; Prometheus reads the drop as a restart).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import ValidationError

from heygemd.daemon.claims import claimed_jobs
from heygemd.daemon.readiness import scan_inbox
from heygemd.daemon.status import JobState, JobStatus
from heygemd.daemon.waiting import read_waiting
from heygemd.errors import HeygemdError
from heygemd.fsutil import read_regular
from heygemd.layout import job_folder, status_file
from heygemd.names import plain_name
from heygemd.pipeline import faces, presenter_cache
from heygemd.settings import PathsSettings

MAX_AGE_S = 5.0
"""Seconds a look at the folders answers scrapes before the next one (Prometheus scrapes every 15-60 s)."""
STATUS_MAX_BYTES = 64 * 1024 * 1024
"""A status.json larger than this is not heygemd's and is not read."""

JOB_STATES: tuple[JobState, ...] = ("queued", "processing", "done", "partial", "failed", "cancelled")
CACHES = (faces.FOLDER, presenter_cache.FOLDER)
"""The caches by the name of their folder under the cache directory (and in status.json's ``cached``)."""
UNKNOWN = "unknown"
"""The engine (or error code) label of a status.json that names none."""

RENDER_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Seconds to render one video (``heygemd_render_seconds``)."""
OUTPUT_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Seconds of video rendered (``heygemd_output_seconds``); video.max_audio_seconds is 7200 by default."""
FIRST_FRAME_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds from a job's claim to its first rendered frame (``heygemd_first_frame_seconds``)."""


@dataclass
class Histogram:
    """Counts per bucket (an observation equal to a bound falls in that bound's bucket, as ``le`` says) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ending with ``+Inf``."""
        bounds = (*self.bounds, math.inf)
        return [(floatToGoString(b), float(c)) for b, c in zip(bounds, itertools.accumulate(self.counts), strict=True)]


@dataclass
class Totals:
    """What the finished videos and jobs seen so far add up to (only ever grows)."""

    rendered: Counter[str] = field(default_factory=Counter)
    to_review: Counter[str] = field(default_factory=Counter)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    job_errors: Counter[str] = field(default_factory=Counter)
    cache: Counter[tuple[str, bool]] = field(default_factory=Counter)
    render_s: dict[str, Histogram] = field(default_factory=dict)
    output_s: dict[str, Histogram] = field(default_factory=dict)
    first_frame_s: dict[str, Histogram] = field(default_factory=dict)

    def count(self, status: JobStatus, seen: set[tuple[str, ...]]) -> None:
        """Add what ``status`` records and ``seen`` does not hold yet (keys are added to ``seen``)."""
        engine = status.engine or UNKNOWN
        output_s = status.audio.duration_s if status.audio is not None else None
        for video in status.videos:
            if video.finished is None or video.state not in ("done", "failed"):
                continue
            key: tuple[str, ...] = ("video", video.input, video.finished.isoformat())
            if key in seen:
                continue
            seen.add(key)
            if video.state == "failed":
                self.failed[engine, video.error.code if video.error is not None else UNKNOWN] += 1
                continue
            self.rendered[engine] += 1
            if video.quality is not None and video.quality.review:
                self.to_review[engine] += 1
            if "total" in video.timings:
                self.render_s.setdefault(engine, Histogram(RENDER_BUCKETS)).observe(video.timings["total"])
            if output_s is not None:
                self.output_s.setdefault(engine, Histogram(OUTPUT_BUCKETS)).observe(output_s)
            for cache, hit in video.cached.items():
                self.cache[cache, hit] += 1
        if status.error is not None and status.finished is not None:
            key = ("job_error", status.finished.isoformat())
            if key not in seen:
                seen.add(key)
                self.job_errors[status.error.code] += 1
        if status.first_frame is not None and status.claimed is not None:
            key = ("first_frame", status.first_frame.isoformat())
            if key not in seen:
                seen.add(key)
                seconds = max(0.0, (status.first_frame - status.claimed).total_seconds())
                self.first_frame_s.setdefault(engine, Histogram(FIRST_FRAME_BUCKETS)).observe(seconds)


@dataclass
class _Job:
    """One outbox folder as last read: its status.json's identity (inode, mtime, size), job id and state, and the
    keys of what it added to the totals."""

    signature: tuple[int, int, int]
    job_id: str
    state: JobState
    seen: set[tuple[str, ...]] = field(default_factory=set)


@dataclass(frozen=True)
class Look:
    """The gauges of one look at the folders."""

    jobs: Counter[str]
    inbox_waiting: int
    inbox_settling: int
    claimed: int
    cache_bytes: dict[str, int]
    unreadable: int
    seconds: float


class JobsCollector(Collector):
    """The jobs' metrics of the folders in ``paths``; ``clock``: monotonic seconds (a look is kept ``max_age_s``)."""

    def __init__(
        self, paths: PathsSettings, *, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.paths = paths
        self.max_age_s = max_age_s
        self.clock = clock
        self.totals = Totals()
        self._jobs: dict[str, _Job] = {}
        self._look: Look | None = None
        self._looked_at = -math.inf
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._look is None or self.clock() - self._looked_at >= self.max_age_s:
                self._look = self._take_look()
                self._looked_at = self.clock()
            families = list(_families(self._look, self.totals))
        yield from families

    # -- the folders

    def _take_look(self) -> Look:
        started = time.perf_counter()
        unreadable = self._read_outbox()
        states: Counter[str] = Counter(job.state for job in self._jobs.values())
        in_outbox = {job.job_id for job in self._jobs.values()}
        state_dir = self.paths.state_dir
        try:
            claims = claimed_jobs(state_dir)
        except OSError:  # the share went away meanwhile (a missing state folder or a link there holds none)
            claims = []
        states["queued"] += sum(1 for claim in claims if claim.job_id not in in_outbox)
        try:
            candidates = scan_inbox(self.paths.inbox, state_dir)
        except OSError:  # the share is not mounted
            candidates = []
        waiting = read_waiting(state_dir)
        inbox_waiting = sum(1 for candidate in candidates if candidate.name in waiting)
        states["queued"] += len(candidates)
        return Look(
            jobs=states,
            inbox_waiting=inbox_waiting,
            inbox_settling=len(candidates) - inbox_waiting,
            claimed=len(claims),
            cache_bytes={cache: _folder_bytes(self.paths.cache_dir / cache) for cache in CACHES},
            unreadable=unreadable,
            seconds=time.perf_counter() - started,
        )

    def _read_outbox(self) -> int:
        """Bring ``_jobs`` up to date with the outbox (a status.json is read only when it changed; a folder that
        went away is dropped, what it counted stays counted). Returns how many status files could not be read."""
        outbox = self.paths.outbox
        jobs: dict[str, _Job] = {}
        unreadable = 0
        try:
            with os.scandir(outbox) as it:
                entries = [e.name for e in it if plain_name(e.name, is_dir=True) and e.is_dir(follow_symlinks=False)]
        except OSError:  # no outbox yet, or the share is away: nothing to count now
            entries = []
        for name in entries:
            path = status_file(job_folder(outbox, name))
            try:
                info = os.lstat(path)
            except OSError:  # a folder being made: no status.json yet
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            signature = (info.st_ino, info.st_mtime_ns, info.st_size)
            known = self._jobs.get(name)
            if known is not None and known.signature == signature:
                jobs[name] = known
                continue
            try:
                status = JobStatus.model_validate_json(read_regular(path, max_bytes=STATUS_MAX_BYTES))
            except (OSError, ValidationError, HeygemdError):  # being replaced on a share, or not heygemd's
                unreadable += 1
                if known is not None:
                    jobs[name] = known
                continue
            job = _Job(signature, status.job_id, status.state, known.seen if known is not None else set())
            self.totals.count(status, job.seen)
            jobs[name] = job
        self._jobs = jobs
        return unreadable


def _folder_bytes(folder: Path) -> int:
    """The bytes of the regular files directly in ``folder`` (a cache folder is flat; 0 when it is missing or a
    link: heygemd never uses a cache through a link)."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return 0
        with os.scandir(folder) as it:
            sizes = []
            for entry in it:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # evicted meanwhile
                    continue
                if stat.S_ISREG(info.st_mode):
                    sizes.append(info.st_size)
    except OSError:
        return 0
    return sum(sizes)


def _families(look: Look, totals: Totals) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "heygemd_jobs",
        "Jobs by state: the outbox's status.json files, plus the jobs claimed or in the inbox (queued).",
        labels=["state"],
    )
    for state in JOB_STATES:
        jobs.add_metric([state], look.jobs.get(state, 0))
    yield jobs
    inbox = GaugeMetricFamily(
        "heygemd_inbox_jobs",
        "Job folders in the inbox not taken yet: waiting (a file looks incomplete) or settling (until nothing "
        "changed for intake.settle_seconds, or its .ready marker).",
        labels=["phase"],
    )
    inbox.add_metric(["waiting"], look.inbox_waiting)
    inbox.add_metric(["settling"], look.inbox_settling)
    yield inbox
    yield GaugeMetricFamily(
        "heygemd_claimed_jobs", "Jobs claimed and not finished (rendering, or waiting for a worker).", look.claimed
    )
    cache_bytes = GaugeMetricFamily("heygemd_cache_bytes", "Bytes in each cache folder.", labels=["cache"])
    for cache, size in look.cache_bytes.items():
        cache_bytes.add_metric([cache], size)
    yield cache_bytes

    rendered = CounterMetricFamily("heygemd_videos_rendered", "Videos rendered.", labels=["engine"])
    for engine, n in sorted(totals.rendered.items()):
        rendered.add_metric([engine], n)
    yield rendered
    to_review = CounterMetricFamily(
        "heygemd_videos_to_review",
        "Videos rendered that the quality check flagged for a look (still done; status.json says why).",
        labels=["engine"],
    )
    for engine, n in sorted(totals.to_review.items()):
        to_review.add_metric([engine], n)
    yield to_review
    failed = CounterMetricFamily(
        "heygemd_videos_failed", "Videos that failed, by error code.", labels=["engine", "code"]
    )
    for (engine, code), n in sorted(totals.failed.items()):
        failed.add_metric([engine, code], n)
    yield failed
    job_errors = CounterMetricFamily(
        "heygemd_job_errors", "Jobs that failed as a whole (no video could start), by error code.", labels=["code"]
    )
    for code, n in sorted(totals.job_errors.items()):
        job_errors.add_metric([code], n)
    yield job_errors
    for cache_result, help_text in ((True, "found in"), (False, "not found in")):
        family = CounterMetricFamily(
            f"heygemd_cache_{'hits' if cache_result else 'misses'}",
            f"Videos rendered whose preparation was {help_text} the cache (faces: the face track; presenter: the "
            "engine's per-presenter preparation).",
            labels=["cache"],
        )
        for cache in CACHES:
            family.add_metric([cache], totals.cache.get((cache, cache_result), 0))
        yield family
    for name, help_text, per_engine in (
        ("heygemd_render_seconds", "Seconds to render one video.", totals.render_s),
        (
            "heygemd_output_seconds",
            "Seconds of video rendered (the audio's length); render over output seconds is the real-time factor.",
            totals.output_s,
        ),
        (
            "heygemd_first_frame_seconds",
            "Seconds from a job's claim to its first rendered frame (waiting for a worker, loading the engine, "
            "decoding the audio, the first face track).",
            totals.first_frame_s,
        ),
    ):
        histograms = HistogramMetricFamily(name, help_text, labels=["engine"])
        for engine, histogram in sorted(per_engine.items()):
            histograms.add_metric([engine], histogram.buckets(), histogram.total)
        yield histograms
    yield GaugeMetricFamily(
        "heygemd_status_files_unreadable",
        "status.json files that could not be read at the last look (being replaced, or not heygemd's).",
        look.unreadable,
    )
    yield GaugeMetricFamily(
        "heygemd_metrics_scan_duration_seconds",
        "How long the last look at the outbox, state folder, inbox and caches took.",
        look.seconds,
    )
