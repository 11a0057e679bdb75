"""The engine list is written once: the CLI, the settings, job.toml, the web form and the API all offer the
registry's engines; the pipeline knows an engine only by its contract."""

from __future__ import annotations

import argparse
import ast
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import heygemd
from heygemd.cli import build_parser
from heygemd.engine_names import AUTO, CHOICES, ENGINES
from heygemd.engines.registry import SPECS, resolve, spec_named
from heygemd.errors import ConfigError, JobError
from heygemd.pipeline.engine_contract import Engine
from heygemd.settings import EngineSettings, load_settings
from heygemd.web.app import create_app
from heygemd.web.upload import TEXT_FIELDS, UPLOAD_OPTIONS
from tests.web.webserver import ORIGIN, settings_for

REGISTRY = [AUTO, *(spec.name for spec in SPECS)]


def test_the_registry_lists_the_ground_floor_names_and_each_class_agrees() -> None:
    assert [spec.name for spec in SPECS] == list(ENGINES) and list(CHOICES) == REGISTRY
    for spec in SPECS:
        assert spec.engine_class().name == spec.name
        assert spec.needs() == spec.engine_class().needs


def _engine_choices(parser: argparse.ArgumentParser, command: str) -> list[str]:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    (engine,) = [a for a in commands.choices[command]._actions if a.dest == "engine"]
    return list(engine.choices or ())


@pytest.mark.parametrize("command", ["single", "batch"])
def test_the_cli_offers_the_registry(command: str) -> None:
    assert _engine_choices(build_parser(), command) == REGISTRY


def test_the_benchmark_offers_the_registry_engines() -> None:
    from bench.cli import build_parser as bench_parser

    (engine,) = [a for a in bench_parser()._actions if a.dest == "engine"]
    assert list(engine.choices or ()) == REGISTRY[1:]


class _Select(HTMLParser):
    """The options of one ``<select name=...>`` of a page, as submitted (value, else text)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.inside, self.options = name, False, []
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "select":
            self.inside = dict(attrs).get("name") == self.name
        elif tag == "option" and self.inside:
            self._value = dict(attrs).get("value")
            self.options.append(self._value)

    def handle_data(self, data: str) -> None:
        if self.inside and self._value is None and self.options and self.options[-1] is None:
            self.options[-1] = data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self.inside = False
        elif tag == "option":
            self._value = None


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in [k for k in os.environ if k.startswith("HEYGEMD_")]:
        monkeypatch.delenv(key)
    with TestClient(create_app(settings_for(tmp_path)), base_url=ORIGIN, follow_redirects=False) as client:
        yield client


def test_the_web_form_offers_the_registry(client: TestClient) -> None:
    page = _Select("engine")
    page.feed(client.get("/new").text)
    assert page.options == ["", *REGISTRY]  # "" keeps the daemon's setting


def _enums_naming_an_engine(node: Any) -> list[list[str]]:
    if isinstance(node, dict):
        found = [node["enum"]] if set(node.get("enum", ())) & set(ENGINES) else []
        return found + [enum for value in node.values() for enum in _enums_naming_an_engine(value)]
    if isinstance(node, list):
        return [enum for value in node for enum in _enums_naming_an_engine(value)]
    return []


def test_the_api_enums_are_the_registry_and_the_upload_takes_every_job_option(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    enums = _enums_naming_an_engine(spec)
    assert enums and all(enum == REGISTRY for enum in enums)
    form = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["engine"]["enum"] == REGISTRY
    assert set(form["properties"]) == {"audio", "videos", *TEXT_FIELDS}
    assert {"engine", "loop_mode", "crf", "gpu_class"} <= set(UPLOAD_OPTIONS)
    assert form["properties"]["gpu_class"]["pattern"] and form["properties"]["crf"]["maximum"] == 51


def test_an_upload_with_an_unknown_engine_is_told_the_registry(client: TestClient) -> None:
    answer = client.post(
        "/api/jobs",
        files=[("audio", ("a.wav", b"RIFF")), ("videos", ("v.mp4", b"mp4")), ("engine", (None, "sadtalker"))],
    )
    assert answer.status_code == 400
    assert all(f'"{name}"' in answer.json()["hint"] for name in REGISTRY)


def test_settings_and_job_toml_refuse_an_unknown_engine_naming_the_registry(tmp_path: Path) -> None:
    config = tmp_path / "heygemd.toml"
    config.write_text('[engine]\nname = "sadtalker"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as bad_setting:
        load_settings(config)
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.toml").write_text('engine = "sadtalker"\n', encoding="utf-8")
    from heygemd.daemon.jobs import load_options

    with pytest.raises(JobError) as bad_option:
        load_options(job / "job.toml")
    with pytest.raises(ConfigError) as bad_name:
        spec_named("sadtalker")
    for text in (bad_setting.value.message, bad_option.value.message, bad_name.value.hint):
        assert all(f"'{name}'" in text or f'"{name}"' in text for name in REGISTRY), text


def test_auto_takes_the_registry_order_and_the_weights_free_engine_loads(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    choosable = [spec.name for spec in SPECS if spec.available is not None]
    assert choosable == ["musetalk", "wav2lip", "mouthwarp"]  # latentsync is only ever chosen by name
    assert resolve(EngineSettings(), models).name == choosable[-1] == "mouthwarp"
    engine = resolve(EngineSettings(), models).load(EngineSettings(), models)
    assert isinstance(engine, Engine) and engine.name == "mouthwarp" and engine.batch_size >= 1


def test_auto_never_takes_latentsync_even_with_its_files(tmp_path: Path, latentsync_folder: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "latentsync").symlink_to(latentsync_folder, target_is_directory=True)
    files = spec_named("latentsync").files
    assert files is not None and files(EngineSettings(), models).complete
    assert resolve(EngineSettings(), models).name == "mouthwarp"
    assert resolve(EngineSettings(name="latentsync"), models).name == "latentsync"

    from heygemd.check import run_checks
    from heygemd.settings import Settings

    settings = Settings.model_validate(
        {"paths": {"inbox": tmp_path / "in", "outbox": tmp_path / "out", "models": models}, "engine": {"device": "cpu"}}
    )
    row = {row.name: row for row in run_checks(settings)}["latentsync files"]
    assert row.ok and not row.required and "all 6 files found" in row.detail  # unet_config.yaml: the tiny model's
    # found is not loaded: only the engine in use is, and the row says how to load these
    assert "not loaded" in row.detail and "HEYGEMD_ENGINE__NAME=latentsync heygemd check" in row.detail, row.detail


def test_the_pipeline_imports_no_engine() -> None:
    pipeline = Path(heygemd.__file__).parent / "pipeline"
    imported = {
        (module.name, name)
        for module in pipeline.glob("*.py")
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [f"{node.module}.{alias.name}" for alias in node.names]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert imported and not {(module, name) for module, name in imported if name.startswith("heygemd.engines")}


def test_check_has_a_files_row_for_each_engine_that_needs_files_and_the_licence_of_the_one_in_use(
    tmp_path: Path,
) -> None:
    from heygemd.check import run_checks
    from heygemd.settings import Settings

    models = tmp_path / "models"
    models.mkdir()
    settings = Settings.model_validate(
        {"paths": {"inbox": tmp_path / "in", "outbox": tmp_path / "out", "models": models}, "engine": {"device": "cpu"}}
    )
    rows = {row.name: row for row in run_checks(settings)}
    with_files = [spec.name for spec in SPECS if spec.files is not None]
    assert with_files and all(f"{name} files" in rows for name in with_files)
    assert all(not rows[f"{name} files"].ok and not rows[f"{name} files"].required for name in with_files)
    assert str(models) in rows["wav2lip files"].fix and "wav2lip_gan.pth" in rows["wav2lip files"].detail
    assert rows["licence"].detail.startswith("mouthwarp: ") and rows["device"].detail.startswith("cpu (mouthwarp")

    (models / "wav2lip_gan.pth").write_bytes(b"not a checkpoint")  # auto now takes wav2lip
    rows = {row.name: row for row in run_checks(settings)}
    assert rows["wav2lip files"].ok and rows["wav2lip files"].required and not rows["musetalk files"].required
    assert rows["licence"].detail.startswith("wav2lip: ") and "non-commercial" in rows["licence"].detail
    assert not rows["engine"].ok and "wav2lip_gan.pth" in rows["engine"].detail
