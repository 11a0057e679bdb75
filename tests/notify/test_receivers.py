"""The receivers docs/automation.md prints, run as printed on deliveries signed by heygemd's own sender: the Python
one (FastAPI) and the n8n Code node (in Node, with n8n's $input and helpers stood in for)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from heygemd.notify.callbacks import signature

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "automation.md").read_text(encoding="utf-8")
SECRET = "callback-secret-0123456789"
BODY = json.dumps({"job_id": "lesson-01", "state": "done", "progress": 1.0, "note": "ünïcode"}, ensure_ascii=False)


def block(language: str, marker: str) -> str:
    (code,) = [b for b in re.findall(rf"```{language}\n(.*?)```", DOC, re.S) if marker in b]
    return str(code)


def signed(body: bytes, *, t: int | None = None) -> str:
    return signature(SECRET.encode(), body, int(time.time()) if t is None else t)


def test_the_python_receiver_accepts_heygemds_deliveries_once_and_refuses_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = block("python", "def job_finished(")
    documented = (REPO / "docs" / "notifications.md").read_text(encoding="utf-8")
    verify = code[code.index("def verify(") : code.index("@app.post")].strip()
    assert verify in documented, "the same verifier as docs/notifications.md's"
    monkeypatch.setenv("HEYGEMD_NOTIFY__SIGNING_SECRET", SECRET)
    namespace: dict[str, object] = {}
    exec(compile(code, "automation.md", "exec"), namespace)
    client = TestClient(namespace["app"])  # type: ignore[arg-type]
    body = BODY.encode()
    headers = {"Heygemd-Signature": signed(body), "Heygemd-Delivery": "d1", "Content-Type": "application/json"}
    assert client.post("/heygemd", content=body, headers=headers).json() == {"received": "d1"}
    assert client.post("/heygemd", content=body, headers=headers).status_code == 200, "a retry is answered 2xx"
    assert namespace["seen"] == {"d1"}
    tampered = body.replace(b"done", b"fail")
    assert client.post("/heygemd", content=tampered, headers=headers).status_code == 401
    old = {**headers, "Heygemd-Signature": signed(body, t=int(time.time()) - 3600)}
    assert client.post("/heygemd", content=body, headers=old).status_code == 401


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_n8n_code_node_passes_a_signed_delivery_and_stops_a_forged_one(tmp_path: Path) -> None:
    code = block("javascript", "timingSafeEqual").replace("the value of HEYGEMD_NOTIFY__SIGNING_SECRET", SECRET)

    def run(body: bytes, header: str) -> subprocess.CompletedProcess[str]:
        stand_ins = f"""
const $input = {{ first: () => ({{ json: {{ headers: {{ 'heygemd-signature': {json.dumps(header)},
                                                       'heygemd-delivery': 'd1' }} }} }}) }};
const helpers = {{ getBinaryDataBuffer: async (index, name) => {{
  if (index !== 0 || name !== 'data') throw new Error('not the Wait node raw body');
  return Buffer.from({json.dumps(body.hex())}, 'hex');
}} }};
(async function () {{
{code}
}}).call({{ helpers }}).then((items) => console.log(JSON.stringify(items)),
                            (err) => {{ console.error(err.message); process.exit(3); }});
"""
        script = tmp_path / "node.js"
        script.write_text(stand_ins, encoding="utf-8")
        return subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)

    body = BODY.encode()
    passed = run(body, signed(body))
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout) == [{"json": {"body": json.loads(BODY), "delivery": "d1"}}]
    forged = run(body.replace(b"done", b"fail"), signed(body))
    assert forged.returncode == 3 and "does not match" in forged.stderr
    stale = run(body, signed(body, t=int(time.time()) - 3600))
    assert stale.returncode == 3 and "old one" in stale.stderr
