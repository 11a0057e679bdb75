"""The Celery app of the farm, the task's name and id, and the queue names (placement by engine and GPU class)."""

from __future__ import annotations

from celery import Celery

from heygemd.farm.broker import BROKER_LEVELS
from heygemd.settings import QueueSettings

TASK_NAME = "heygemd.render_job"


JOB_TASK_PREFIX = "heygemd-job:"


def task_id(job_id: str) -> str:
    """The task id of a job: derived from the job id alone, so a job published twice is one task."""
    return JOB_TASK_PREFIX + job_id


def job_of_task(task: str) -> str | None:
    """The job id of a job's task id (None for another task: a presenter's preparation)."""
    return task.removeprefix(JOB_TASK_PREFIX) if task.startswith(JOB_TASK_PREFIX) else None


def queue_for(settings: QueueSettings, engine: str | None, gpu_class: str | None = None) -> str:
    """The queue a job goes to: ``<queue>``, ``<queue>.<engine>`` when it asks for an engine, either followed by
    ``.gpu.<class>`` when it asks for a GPU class (e.g. ``heygemd.musetalk.gpu.a100``)."""
    name = settings.queue if engine in (None, "auto") else f"{settings.queue}.{engine}"
    return f"{name}.gpu.{gpu_class}" if gpu_class else name


def worker_queues(settings: QueueSettings, engine_name: str) -> list[str]:
    """The queues a worker consumes: the common one and one per engine it can load (``engines``, else its own),
    and with a ``gpu_class`` the same again for jobs of that class. A worker takes only what it can run."""
    engines = [None, *(engine for engine in settings.engines or [engine_name] if engine != "auto")]
    classes = [None, settings.gpu_class] if settings.gpu_class else [None]
    return [queue_for(settings, engine, gpu_class) for gpu_class in classes for engine in engines]


def make_app(settings: QueueSettings) -> Celery:
    """A Celery app on ``settings.broker``: one task at a time per worker, acknowledged only after the job,
    redelivered when the worker is lost, no result backend (status.json is the result)."""
    app = Celery("heygemd", broker=settings.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_ignore_result=True,
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout, "priority_steps": BROKER_LEVELS},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for Redis to come back, however long
        broker_connection_timeout=5.0,
        worker_hijack_root_logger=False,  # heygemd's own logging (journald / JSON lines) stays in charge
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=True,  # Flower (and `celery events`) see the tasks
        task_send_sent_event=True,
    )
    return app
