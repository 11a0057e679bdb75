"""What ``heygemd users`` prints and asks: the table of accounts and their API keys (never a hash), and a new
password, typed twice on a terminal or read as one line from standard input (for scripts)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TextIO

from heygemd.accounts import Account, AccountError
from heygemd.names import printable


def _when(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts is not None else "never"


def format_accounts(accounts: Iterable[Account]) -> str:
    """One line per account (name, role, whether it has a password, when made), then one per API key (its name,
    id, when made and last used)."""
    accounts = list(accounts)
    if not accounts:
        return "no accounts (web.token, if set, is the only key)\n"
    rows = [["ACCOUNT", "ROLE", "PASSWORD", "CREATED", "API KEY", "KEY ID", "LAST USED"]]
    for a in accounts:
        first = [a.name, a.role, "yes" if a.password else "no", _when(a.created)]
        if not a.keys:
            rows.append([*first, "-", "-", "-"])
        for n, key in enumerate(a.keys):
            rows.append([*(first if n == 0 else ["", "", "", ""]), key.name, key.id, _when(key.last_used)])
    widths = [max(len(printable(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(printable(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def read_password(stdin: TextIO | None = None) -> str:
    """A new password: typed twice without echo on a terminal, else the first line of standard input."""
    stdin = sys.stdin if stdin is None else stdin
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise AccountError("the two passwords differ", hint="Type the same password twice.")
    else:
        line = stdin.readline()
        if not line:
            raise AccountError(
                "no password given: standard input is empty and not a terminal",
                hint="Run it in a terminal to type the password, or give it as one line on standard input "
                "(printf '%s\\n' \"$PASSWORD\" | heygemd users ...); an account for scripts needs none "
                "(`heygemd users add NAME --role ROLE --no-password`, then `heygemd users key NAME KEYNAME`).",
            )
        first = line.rstrip("\r\n")
    if len(first) < 8:
        raise AccountError(
            "a password must be at least 8 characters long", hint="Choose a longer one (a passphrase of a few words)."
        )
    return first
