"""Run a command under the system-call filter of deploy/systemd/heygemd.service, without systemd.

``python tests/seccomp_exec.py CMD ARGS...`` loads a seccomp filter built like systemd builds it for the unit's
``SystemCallFilter=`` lines (groups expanded with ``systemd-analyze syscall-filter``; ``~`` lines removed from the
allow list), ``SystemCallErrorNumber=EPERM`` and ``SystemCallArchitectures=native``, then execs CMD: the filter
holds for it and every child (ffmpeg included), as in the unit. Needs libseccomp's Python binding (Debian's
``python3-seccomp``, for this interpreter's version); exits 77 when it cannot be loaded.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "heygemd.service"
UNAVAILABLE = 77


def syscall_groups() -> dict[str, list[str]]:
    """Every ``@group`` systemd knows -> its members (system calls and nested groups)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in text.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if not line[0].isspace() and item.startswith("@"):
            members = groups.setdefault(item, [])
        elif members is not None:
            members.append(item)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups.get(name, []), groups) if name.startswith("@") else {name}
    return calls


def allowed_calls(unit_text: str) -> set[str]:
    """The system calls the unit's SystemCallFilter= lines allow (an allow list, then ~ removals, in order)."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in re.findall(r"^SystemCallFilter=(.*)$", unit_text, flags=re.M):
        if value.startswith("~"):
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed


def main(argv: list[str]) -> int:
    sys.path.append("/usr/lib/python3/dist-packages")  # where Debian's python3-seccomp lives
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"seccomp binding not available for this Python: {exc}", file=sys.stderr)
        return UNAVAILABLE
    text = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^SystemCallErrorNumber=EPERM$", text, flags=re.M), "the unit refuses calls with EPERM"
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))  # native architecture only
    for call in sorted(allowed_calls(text)):
        try:
            rules.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError, OSError):
            continue  # a name this kernel/libseccomp does not know: nothing to allow
    rules.load()
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
