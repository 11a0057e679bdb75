"""Configuration: TOML file chosen at run time, HEYGEMD_* environment over it, clear errors naming the setting."""

from __future__ import annotations

import tomllib
import tracemalloc
from pathlib import Path

import pytest

from heygemd.errors import ConfigError
from heygemd.settings import REPO_CONFIG, Settings, check_naming, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("HEYGEMD_"):
            monkeypatch.delenv(key)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_and_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "heygemd.toml", '[paths]\ninbox = "in"\noutbox = "/srv/out"\n[intake]\nsettle_seconds = 5\n')
    settings = load_settings(cfg)
    assert settings.paths.inbox == tmp_path / "in"
    assert settings.paths.outbox == Path("/srv/out")
    assert settings.paths.state_dir == tmp_path / "in" / ".heygemd"
    assert settings.intake.settle_seconds == 5.0
    assert settings.video.loop_mode == "pingpong"  # untouched settings keep their defaults


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / "heygemd.toml", '[intake]\nsettle_seconds = 5\nobserver = "inotify"\n')
    monkeypatch.setenv("HEYGEMD_INTAKE__SETTLE_SECONDS", "120")
    monkeypatch.setenv("HEYGEMD_PATHS__INBOX", str(tmp_path / "nas" / "inbox"))
    settings = load_settings(cfg)
    assert settings.intake.settle_seconds == 120.0
    assert settings.intake.observer == "inotify"
    assert settings.paths.inbox == tmp_path / "nas" / "inbox"


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ('[intake]\nsettle_seconds = "soon"\n', {}, "intake.settle_seconds"),
        ('[engine]\nname = "magic"\n', {}, "engine.name"),
        ("[video]\ncrf = 99\n", {}, "video.crf"),
        ("[faces]\nunknown_key = 1\n", {}, "faces.unknown_key"),
        ('[outbox]\nnaming = "{name}.mp4"\n', {}, "outbox.naming"),
        ("", {"HEYGEMD_OUTBOX__NAMING": "sub/{stem}.mp4"}, "outbox.naming"),
        ("", {"HEYGEMD_INTAKE__OBSERVER": "carrier-pigeon"}, "intake.observer"),
        ("", {"HEYGEMD_INTAKE__SETTLE_SECONDS": "soon"}, "intake.settle_seconds"),
        ('[notify]\nsigning_secret = "too-short"\n', {}, "notify.signing_secret"),
        ("", {"HEYGEMD_NOTIFY__CALLBACK_HOSTS": '["http://hooks.example.com"]'}, "notify.callback_hosts"),
        ('[notify]\nevents = ["job.done"]\n', {}, "notify.events"),
        ('[web]\npublic_url = "lipsync.example.com"\n', {}, "web.public_url"),
    ],
)
def test_invalid_values_name_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], named: str
) -> None:
    cfg = write(tmp_path / "heygemd.toml", text)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg)
    assert named in caught.value.message
    if env:  # set by a variable, not in the file: the message names the variable, never the file
        (variable,) = env
        assert f"invalid environment variable: {variable}=" in caught.value.message
        assert str(cfg) not in caught.value.message and "environment variable" in caught.value.hint
    else:
        assert str(cfg) in caught.value.message


def test_toml_syntax_error_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.toml", "[paths\ninbox = ")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_shipped_config_documents_every_setting_with_its_default() -> None:
    shipped = tomllib.loads(REPO_CONFIG.read_text(encoding="utf-8"))
    text = REPO_CONFIG.read_text(encoding="utf-8")
    defaults = Settings.model_construct()
    for section_name in Settings.model_fields:
        section = getattr(defaults, section_name)
        for key, field in type(section).model_fields.items():
            assert f"{key} =" in text, f"{section_name}.{key} is not in config/heygemd.toml"
            assert field.description, f"{section_name}.{key} has no description"
            if key in shipped.get(section_name, {}) and section_name != "paths":
                value = shipped[section_name][key]
                expected = getattr(section, key)
                assert (tuple(value) if isinstance(value, list) else value) == expected, f"{section_name}.{key}"


SLASH = "{stem.translate.__doc__[223]}"
"""A format field that renders as "/" (str.translate's docstring, 223rd character): no "/" in the template itself."""


@pytest.mark.parametrize(
    ("naming", "words"),
    [
        (f"..{SLASH}..{SLASH}{{stem}}.mp4", "attribute or index"),  # ../../x.mp4: out of the outbox
        ("{stem[0]}{stem}.mp4", "attribute or index"),
        ("{stem!r}.mp4", "conversion"),
        ("{stem:>20}.mp4", "format spec"),
        ("{}{stem}.mp4", "only the placeholder {stem}"),
        ("{0}{stem}.mp4", "only the placeholder {stem}"),
        ("{stem}.mp4}", "Single '}'"),
        ("x" * 252 + "{stem}.mp4", "255 bytes"),
        ("{stem}.part", "hidden, junk or still-being-copied"),
    ],
)
def test_naming_allows_only_the_literal_stem_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, naming: str, words: str
) -> None:
    monkeypatch.setenv("HEYGEMD_OUTBOX__NAMING", naming)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path / "heygemd.toml", ""))
    assert "outbox.naming" in caught.value.message and words in caught.value.message, caught.value.message


def test_a_naming_width_spec_is_refused_before_anything_is_formatted() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="format spec"):
            check_naming("{stem:X>250000000}{stem}.mp4")  # would format to 250 MB per video
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak:,} bytes allocated: the template was formatted"


def test_naming_with_stem_fields_and_braces_is_accepted() -> None:
    assert check_naming("{stem}-{{v2}}_{stem}.mp4") == "{stem}-{{v2}}_{stem}.mp4"
