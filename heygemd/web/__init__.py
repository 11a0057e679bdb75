"""The web dashboard and HTTP API: a thin layer over the inbox and the outbox.

It writes jobs into the inbox exactly as a NAS user would (``upload``), and reads status.json, job.log and the
outputs from the outbox (``catalog``); the daemon's worker stays the only thing that renders. ``app`` builds the
FastAPI application, ``server`` runs it with uvicorn (``heygemd web``, or a thread of ``heygemd run``).
"""
