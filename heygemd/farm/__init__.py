"""The farm: Celery over Redis carries one task per claimed job from the intake (`heygemd run` with
``[queue] broker`` set) to `heygemd worker` processes, one per GPU, on any host that mounts the shared storage.

- ``app``: the Celery app, its settings (acks late, prefetch 1, ...), task ids and queue names.
- ``broker``: what the intake and the workers ask Redis directly: reachable?, which tasks are queued, job locks.
- ``intake``: ``heygemd run`` in a farm: the daemon's inbox loop, publishing each claimed job instead of rendering it.
- ``publish``: the intake's side (publish a claimed job, find claimed jobs whose task was lost).
- ``task``: the worker's side (one task = :func:`heygemd.daemon.worker.process_job` on the claimed job).
- ``worker``: ``heygemd worker``, the Celery worker around the task.
- ``cancel``: a cancelled job whose task still waits in Redis is finished at once, under the job's lock.

The farm is wired in from above (the CLI chooses it); the daemon never imports it. Only the daemon's own functions
render; status.json stays the truth, the broker only says who works next.
"""
