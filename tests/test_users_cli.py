"""`heygemd users` as an operator runs it: accounts made with a password from stdin, an API key printed once and
never stored, the list without secrets, a key revoked, an account removed; wrong input answered with its code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from heygemd.accounts import Accounts
from tests.web.webserver import clean_env, heygemd_argv, write_config


def users(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*heygemd_argv(), "--config", str(config), "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=config.parent,
    )


def test_users_add_key_list_revoke_remove(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "inbox" / ".heygemd"
    added = users(config, "add", "anna", "--role", "editor", stdin="a long passphrase\n")
    assert added.returncode == 0 and "anna: added as editor" in added.stdout, added
    assert Accounts(state).check_password("anna", "a long passphrase") is not None
    assert users(config, "add", "ci", "--role", "viewer", "--no-password").returncode == 0
    key = users(config, "key", "ci", "nightly")
    assert key.returncode == 0, key
    secret = key.stdout.strip().splitlines()[-1]
    assert secret.startswith("hgd_") and "shown this once" in key.stdout
    assert secret not in (state / "users.json").read_text(encoding="utf-8")
    assert oct((state / "users.json").stat().st_mode & 0o777) == oct(0o600)
    listed = users(config, "list").stdout
    assert "anna" in listed and "editor" in listed and "nightly" in listed and "never" in listed
    assert secret not in listed and "$argon2" not in listed
    assert users(config, "role", "ci", "editor").returncode == 0
    assert Accounts(state).get("ci").role == "editor"  # type: ignore[union-attr]
    assert users(config, "key", "ci", "nightly", "--revoke").returncode == 0
    assert Accounts(state).check_key(secret) is None
    assert users(config, "remove", "anna").returncode == 0
    assert [a.name for a in Accounts(state).all()] == ["ci"]
    assert json.loads((state / "users.json").read_text(encoding="utf-8"))["accounts"][0]["keys"] == []


def test_users_refuses_what_is_wrong_with_its_code(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    short = users(config, "add", "anna", "--role", "admin", stdin="short\n")
    assert short.returncode == 1 and "[BAD_ACCOUNT]" in short.stderr and "8 characters" in short.stderr
    nothing = users(config, "add", "anna", "--role", "admin")  # a script that forgot to pipe the password
    assert nothing.returncode == 1 and "[BAD_ACCOUNT]" in nothing.stderr, nothing
    assert "no password" in nothing.stderr and "--no-password" in nothing.stderr, nothing.stderr
    assert "8 characters" not in nothing.stderr, "nothing was given: not a short password"
    assert users(config, "add", "anna", "--role", "admin", stdin="long enough pw\n").returncode == 0
    again = users(config, "add", "anna", "--role", "viewer", stdin="long enough pw\n")
    assert again.returncode == 1 and "[ACCOUNT_EXISTS]" in again.stderr
    gone = users(config, "remove", "bob")
    assert gone.returncode == 1 and "[NO_SUCH_ACCOUNT]" in gone.stderr
    bad = users(config, "add", "Token", "--role", "viewer", "--no-password")
    assert bad.returncode == 1 and "[BAD_ACCOUNT]" in bad.stderr
    wrong_role = users(config, "add", "bob", "--role", "owner")
    assert wrong_role.returncode == 2 and "invalid choice" in wrong_role.stderr
    os.chmod(tmp_path / "inbox" / ".heygemd" / "users.json", 0o664)
    refused = users(config, "list")
    assert refused.returncode == 1 and "[BAD_CONFIG]" in refused.stderr and "chmod 600" in refused.stderr
