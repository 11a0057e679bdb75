"""heygemd benchmark: ``python -m bench`` (see bench/README.md).

Every measurement runs in a fresh child process (``python -m bench.child``) so its peak RSS
(``ru_maxrss``) belongs to that one render; the parent only makes inputs, collects and reports.
"""
