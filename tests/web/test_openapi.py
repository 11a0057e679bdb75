"""What workflow tools import: /openapi.json passes openapi-spec-validator, names every operation for an agent, declares
and applies the bearer token, takes its enums from the code's own lists and carries its examples; the n8n example
workflow has the structure n8n exports, and the body it sends is a job heygemd takes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

from openapi_spec_validator import validate

from heygemd.daemon.status import JobStatus
from heygemd.engine_names import AUTO
from heygemd.engines.registry import SPECS
from heygemd.settings import LoopMode
from heygemd.web.openapi import JOB_DONE, OPERATIONS, URL_JOB_EXAMPLE
from heygemd.web.submission import FORM, JSON, parse_url_job
from tests.web.webserver import TOKEN

REPO = Path(__file__).resolve().parents[2]
N8N_EXAMPLE = REPO / "deploy" / "examples" / "n8n-lipsync.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def openapi(make_client, web: str = "") -> dict[str, Any]:
    client, _ = make_client(web=web)
    response = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"} if "token" in web else {})
    assert response.status_code == 200, response.text
    return dict(response.json())


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{m.upper()} {path}": op for path, item in document["paths"].items() for m, op in item.items() if m in METHODS
    }


def test_the_document_is_valid_and_every_operation_is_named_for_an_agent(make_client) -> None:
    document = openapi(make_client, f'token = "{TOKEN}"\npublic_url = "https://lipsync.example.com/"')
    validate(document)
    ops = operations(document)
    ids = [op["operationId"] for op in ops.values()]
    assert sorted(ids) == sorted(OPERATIONS), "every operation has its stable id, and each id is used once"
    for name, op in ops.items():
        assert op["summary"] and len(op["description"]) > 60, name
        assert "422" not in op["responses"], f"{name}: invalid parameters are answered 400, not 422"
    assert document["servers"] == [{"url": "https://lipsync.example.com"}]
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}], "applied to every operation"


def test_the_submission_carries_the_codes_own_lists_and_its_examples(make_client) -> None:
    submit = operations(openapi(make_client))["POST /api/jobs"]
    content = submit["requestBody"]["content"]
    assert list(content) == [JSON, "multipart/form-data", FORM], "Dify sends the first and offers the last's fields"
    engines = [AUTO, *(spec.name for spec in SPECS)]
    for kind, body in content.items():
        properties = body["schema"]["properties"]
        assert properties["engine"]["enum"] == engines, kind
        assert properties["loop_mode"]["enum"] == list(get_args(LoopMode)), kind
        assert {"gpu_class", "callback_url", "audio_url", "video_urls", "name", "crf"} <= set(properties), kind
    assert {"audio", "videos"} <= set(content["multipart/form-data"]["schema"]["properties"])
    assert content[JSON]["schema"]["required"] == ["audio_url", "video_urls"]
    (key,) = [p for p in submit["parameters"] if p["in"] == "header"]
    assert key["name"] == "Idempotency-Key" and not key["required"] and "IDEMPOTENCY_MISMATCH" in key["description"]
    assert content[JSON]["example"] == URL_JOB_EXAMPLE
    received, options = parse_url_job(JSON, json.dumps(URL_JOB_EXAMPLE).encode())
    assert received.video_urls and options.callback_url, "the request example is a job heygemd takes"
    assert JobStatus.model_validate(JOB_DONE).state == "done", "the status example is a status document"
    for code in ("201", "200", "400", "409", "502"):
        assert submit["responses"][code]["content"]["application/json"]["example"], code


def test_the_n8n_example_is_a_workflow_as_n8n_exports_it() -> None:
    workflow = json.loads(N8N_EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(workflow["name"], str) and isinstance(workflow["connections"], dict)
    nodes = {node["name"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "node names are unique (connections are keyed by them)"
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    for node in workflow["nodes"]:
        assert uuid.match(node["id"]) and node["type"].startswith("n8n-nodes-base."), node["name"]
        assert isinstance(node["typeVersion"], (int, float)) and isinstance(node["parameters"], dict)
        assert len(node["position"]) == 2 and all(isinstance(x, (int, float)) for x in node["position"])
    order = ["Start"]
    for source, outputs in workflow["connections"].items():
        assert source in nodes
        for branch in outputs["main"]:
            for target in branch:
                assert target["node"] in nodes and target["type"] == "main" and target["index"] == 0
    while (following := workflow["connections"].get(order[-1])) is not None:
        order.append(following["main"][0][0]["node"])
    kinds = [nodes[name]["type"] for name in order]
    assert kinds[-3:] == ["n8n-nodes-base.httpRequest", "n8n-nodes-base.wait", "n8n-nodes-base.httpRequest"]
    submit, wait, download = (nodes[name] for name in order[-3:])

    assert wait["parameters"]["resume"] == "webhook" and wait["parameters"]["httpMethod"] == "POST"
    assert uuid.match(wait["webhookId"])
    assert submit["parameters"]["method"] == "POST" and submit["parameters"]["url"].endswith("/api/jobs")
    headers = {h["name"] for h in submit["parameters"]["headerParameters"]["parameters"]}
    assert headers == {"Idempotency-Key"} and submit["retryOnFail"], "retries are safe with the key"
    assert download["parameters"]["url"].endswith("/outputs.zip")
    assert download["parameters"]["options"]["response"]["response"]["responseFormat"] == "file"
    for node in (submit, download):
        assert node["parameters"]["genericAuthType"] == "httpHeaderAuth" and "httpHeaderAuth" in node["credentials"]

    body = submit["parameters"]["jsonBody"]
    assert body.startswith("=") and "{{ $execution.resumeUrl }}" in body
    samples = {"$execution.resumeUrl": "https://n8n.example.com/webhook-waiting/7", "$json.job_name": "lesson-01"}
    filled = re.sub(
        r"\{\{ (.*?) \}\}", lambda m: samples.get(m.group(1), f"https://files.example.com/{m.group(1)}"), body[1:]
    )
    received, options = parse_url_job(JSON, filled.encode())
    assert options.callback_url == "https://n8n.example.com/webhook-waiting/7", "the callback is the Wait node's URL"
    assert received.fields["name"] == "lesson-01" and received.audio_url and received.video_urls
