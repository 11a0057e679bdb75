"""heygemd: a lip-sync video daemon.

One speech audio drives many presenter videos: drop a job folder into the inbox,
collect lip-synced videos and a live ``status.json`` from the outbox.
"""

__version__ = "0.1.0"
