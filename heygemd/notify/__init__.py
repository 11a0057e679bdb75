"""Telling others that a job ended: signed callbacks to the URL a job names (``callbacks``, for workflow tools) and
short messages for people on the channels of ``[notify] urls`` (``alerts``, through Apprise).

Both read what the worker records (a job's status document) and never hold up rendering: each sends from a
thread of its own; the callbacks' pending deliveries live in the state folder, like claims. ``notices`` joins them
into the hooks the CLI hands to the daemon (:mod:`heygemd.daemon.hooks`).
"""
