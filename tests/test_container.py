"""deploy/container: the image's settings, the compose file, and the image itself built and run.

The build test makes the base image with ``build-base.sh`` (mmdebstrap from the Debian mirror: no registry is
needed), builds the image from it with buildah, with the CPU PyTorch wheel that pip finds on this machine, and runs
it with podman as an operator would: ``heygemd run`` with its web server, the demo job dropped in and rendered by
mouthwarp, the HEALTHCHECK, JSON logs, a clean stop. It skips, with the reason, where that cannot run (not root, the
tools missing, a container runtime that cannot start containers here, no CPU wheel for pip).

Base and image are kept between runs in ``CACHE`` (outside the repository), keyed by what goes into them, so a
second run with unchanged sources only renders. Storage is overlay where the kernel offers it, else vfs (every
container start then copies the whole image, about a minute each).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from heygemd.daemon.status import FINISHED_JOB_STATES
from heygemd.errors import ConfigError
from heygemd.settings import Settings
from heygemd.web.auth import check_bind

REPO = Path(__file__).resolve().parent.parent
CONTAINER = REPO / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
COMPOSE = CONTAINER / "compose.yaml"
BUILD_BASE = CONTAINER / "build-base.sh"
CACHE = Path("/var/tmp/heygemd-container-test")
USER = "4321:4321"  # not the image's own user: a NAS owner's id, as compose's `user:` sets it
# compose.yaml's `user:`, `cap_drop:` and `security_opt:` (test_compose_file checks them there).
AS_COMPOSE_RUNS_IT = ["--user", USER, "--cap-drop", "all", "--security-opt", "no-new-privileges"]


# --- the Containerfile and compose.yaml, read as text ----------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def image_env() -> dict[str, str]:
    """The runtime image's ENV (the last stage's)."""
    env: dict[str, str] = {}
    for word, rest in instructions(CONTAINERFILE.read_text()):
        if word == "FROM":
            env = {}
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_volumes() -> set[str]:
    return {
        path for word, rest in instructions(CONTAINERFILE.read_text()) if word == "VOLUME" for path in json.loads(rest)
    }


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command (exec form)."""
    (check,) = [rest for word, rest in instructions(CONTAINERFILE.read_text()) if word == "HEALTHCHECK"]
    return list(json.loads(check.partition(" CMD ")[2]))


def is_setting(key: str) -> bool:
    """Whether HEYGEMD_SECTION__KEY names a real setting (a typo would be silently ignored)."""
    section, _, field = key.removeprefix("HEYGEMD_").lower().partition("__")
    model = Settings.model_fields[section].annotation if section in Settings.model_fields else None
    return isinstance(model, type) and issubclass(model, BaseModel) and field in model.model_fields


def test_image_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's HEYGEMD_* environment names real settings, points the folders at its volumes, logs JSON, and
    serves the web on every address of the container, which heygemd allows only with a token of 16 bytes."""
    env = image_env()
    heygemd = {key: value for key, value in env.items() if key.startswith("HEYGEMD_")}
    assert heygemd and all(is_setting(key) for key in heygemd), heygemd
    for key, value in heygemd.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    paths = settings.paths
    assert {str(paths.inbox), str(paths.outbox), str(paths.presenters_dir), str(paths.models), str(paths.cache)} == (
        image_volumes()
    )
    assert paths.state_dir.is_relative_to(paths.inbox)  # claiming is a rename: the state stays on the inbox's share
    assert settings.logging.format == "json"
    assert settings.web.enabled and settings.web.host == "0.0.0.0"
    with pytest.raises(ConfigError, match="no web.token"):
        check_bind(settings.web)
    monkeypatch.setenv("HEYGEMD_WEB__TOKEN", "")  # compose passes an unset token as an empty one
    with pytest.raises(ConfigError, match="no web.token"):
        check_bind(Settings().web)
    monkeypatch.setenv("HEYGEMD_WEB__TOKEN", secrets.token_hex(16))
    check_bind(Settings().web)
    expose = [rest for word, rest in instructions(CONTAINERFILE.read_text()) if word == "EXPOSE"]
    assert expose == [str(settings.web.port)]


def test_compose_file() -> None:
    """compose.yaml: the image built from the Containerfile, the GPU, the web port on loopback, the image's volumes,
    settings that exist, and the farm (Redis and a worker) only in the `farm` profile."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"heygemd", "redis", "worker"}
    web, redis, worker = services["heygemd"], services["redis"], services["worker"]

    build = web["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE
    assert "profiles" not in web and redis["profiles"] == ["farm"] and worker["profiles"] == ["farm"]
    port = image_env()["HEYGEMD_WEB__PORT"]
    assert [p.rsplit(":", 1)[-1] for p in web["ports"]] == [port]
    assert all(p.startswith("127.0.0.1:") for p in web["ports"])
    for service in (web, worker):
        # "${HEYGEMD_INBOX:-/srv/heygemd/inbox}:/srv/heygemd/inbox": the host folder, then the container's
        assert {volume.partition("}:")[2].split(":")[0] for volume in service["volumes"]} == image_volumes()
        assert all(is_setting(key) for key in service["environment"] if key.startswith("HEYGEMD_"))
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
        assert service["user"] and service["init"] is True
        assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"]
    assert worker["command"][0] == "worker" and worker["healthcheck"] == {"disable": True}
    assert "HEYGEMD_REDIS_PASSWORD" in redis["environment"]["REDIS_PASSWORD"]
    assert "--requirepass" in redis["command"][-1] and "--appendonly yes" in redis["command"][-1]
    assert all(p.startswith("${HEYGEMD_REDIS_BIND:-127.0.0.1}:") for p in redis["ports"])


# --- building and running the image -------------------------------------------------------------------------


@dataclass(frozen=True)
class Podman:
    """buildah and podman on one image store of their own in CACHE."""

    driver: str

    @property
    def storage(self) -> list[str]:
        return ["--storage-driver", self.driver, "--root", str(CACHE / f"storage-{self.driver}"),
                "--runroot", str(CACHE / f"run-{self.driver}")]  # fmt: skip

    def podman(self, *args: str) -> list[str]:
        # runc: crun 1.8 refuses hosts with both cgroup versions mounted (hybrid), runc runs on every layout.
        return ["podman", *self.storage, "--tmpdir", str(CACHE / f"libpod-{self.driver}"), "--runtime", "runc", *args]

    def buildah(self, *args: str) -> list[str]:
        return ["buildah", *self.storage, *args]

    def exists(self, image: str) -> bool:
        return run(self.podman("image", "exists", image), check=False).returncode == 0


# podman raises RLIMIT_NOFILE/NPROC above what a host without CAP_SYS_RESOURCE lets a container set: ask less.
RUN_OPTIONS = ["--network", "none", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def run(
    cmd: list[str], *, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def digest(*paths: Path, extra: str = "") -> str:
    """A short hash of these files (folders: every file in them but bytecode) and ``extra``."""
    sha = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            if "__pycache__" not in file.parts and file.suffix != ".pyc":
                sha.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return sha.hexdigest()[:16]


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    spent: dict[str, float] = {}
    yield spent
    print("container test seconds:", {name: round(seconds) for name, seconds in spent.items()})


@pytest.fixture(scope="module")
def podman() -> Podman:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap and rootful podman (INSTALL.md shows the build by hand)")
    missing = [tool for tool in ("buildah", "podman", "mmdebstrap", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (deploy/setup.sh installs them)")
    CACHE.mkdir(parents=True, exist_ok=True)
    overlay = Podman("overlay")
    return overlay if run(overlay.podman("info"), check=False).returncode == 0 else Podman("vfs")


@pytest.fixture(scope="module")
def base(podman: Podman, timings: dict[str, float]) -> str:
    """The local base image: Debian bookworm from the mirror, made by build-base.sh (kept while it is unchanged)."""
    tag = f"localhost/heygemd-base:{digest(BUILD_BASE)}"
    if not podman.exists(tag):
        start = time.monotonic()
        run(["bash", str(BUILD_BASE), tag], env={**os.environ, "PODMAN": shlex.join(podman.podman())}, timeout=900)
        timings["base"] = time.monotonic() - start
    tried = run(podman.podman("run", "--rm", *RUN_OPTIONS, tag, "true"), check=False)
    if tried.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {tried.stderr.strip()[-500:]}")
    return tag


@pytest.fixture(scope="module")
def cpu_wheels() -> tuple[Path, str]:
    """A folder with the CPU wheel of this environment's PyTorch version, as pip finds it here, and its spec."""
    spec = f"torch=={version('torch').split('+')[0]}+cpu"
    wheels = CACHE / "wheels"
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels)]
    done = run([*pip, spec], check=False, timeout=900)
    if done.returncode != 0:
        reason = f"pip finds no {spec} wheel here (a PIP_EXTRA_INDEX_URL of the PyTorch CPU index offers one)"
        pytest.skip(f"{reason}: {done.stderr.strip()[-300:]}")
    return wheels, spec


@pytest.fixture(scope="module")
def image(podman: Podman, base: str, cpu_wheels: tuple[Path, str], timings: dict[str, float]) -> str:
    """The image built from the Containerfile with the CPU wheel (kept while nothing that goes into it changed)."""
    wheels, spec = cpu_wheels
    sources = [CONTAINERFILE, CONTAINER / "healthcheck.py", REPO / ".dockerignore"]  # and what the build copies:
    sources += [REPO / "pyproject.toml", REPO / "README.md", REPO / "heygemd"]
    tag = f"localhost/heygemd-test:{digest(*sources, extra=base + spec)}"
    if not podman.exists(tag):
        ca = Path("/etc/ssl/certs/ca-certificates.crt")  # this host's trust, for a TLS-inspecting proxy
        start = time.monotonic()
        run(
            podman.buildah(
                "bud", "--isolation", "chroot", "--format", "docker", "--jobs", "2",
                "--file", str(CONTAINERFILE), "--tag", tag,
                "--build-arg", f"BASE={base}", "--build-arg", f"TORCH_SPEC={spec}", "--build-arg", "TORCH_INDEX_URL=",
                "--build-context", f"wheels={wheels}",
                *(["--secret", f"id=pip-ca,src={ca}"] if ca.is_file() else []),
                str(REPO),
            ),
            timeout=1800,
        )  # fmt: skip
        timings["build"] = time.monotonic() - start
        for old in run(podman.podman("images", "--format", "{{.Repository}}:{{.Tag}}")).stdout.split():
            if old.startswith(("localhost/heygemd-test:", "localhost/heygemd-base:")) and old not in (tag, base):
                run(podman.podman("rmi", old), check=False)
        run(podman.podman("image", "prune", "--force"), check=False)
    return tag


def container_state(podman: Podman, name: str) -> dict:
    return json.loads(run(podman.podman("inspect", "--format", "{{json .State}}", name)).stdout)


def wait_for_status(podman: Podman, name: str, status_json: Path, deadline_s: float) -> dict:
    """status.json once its job is finished; fails early when the container stops."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if status_json.is_file():
            status = json.loads(status_json.read_text())
            if status["state"] in FINISHED_JOB_STATES:
                return status
        state = container_state(podman, name)
        assert state["Running"], f"the container stopped ({state}):\n{run(podman.podman('logs', name)).stderr[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"the demo job did not finish in {deadline_s:.0f} s")


def ffprobe_streams(path: Path) -> list[str]:
    out = run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", str(path)]).stdout
    return sorted(stream["codec_type"] for stream in json.loads(out)["streams"])


@pytest.mark.slow
def test_image_serves_and_renders_the_demo(
    podman: Podman, image: str, tmp_path: Path, timings: dict[str, float]
) -> None:
    """The image's default command as compose runs it (another user, the folders mounted, a token, no network):
    the demo job dropped into the inbox is rendered, the HEALTHCHECK passes, every log line is JSON, SIGTERM stops
    it cleanly, and the outputs belong to that user, group-writable."""
    env = image_env()
    targets = {
        "inbox": "HEYGEMD_PATHS__INBOX",
        "outbox": "HEYGEMD_PATHS__OUTBOX",
        "presenters": "HEYGEMD_PATHS__PRESENTERS",
        "cache": "HEYGEMD_PATHS__CACHE",
    }
    folders = {name: tmp_path / name for name in targets}
    uid, gid = (int(part) for part in USER.split(":"))
    mounts = []
    for name, folder in folders.items():
        folder.mkdir()
        os.chown(folder, uid, gid)
        mounts += ["--volume", f"{folder}:{env[targets[name]]}"]
    name = f"heygemd-test-{os.getpid()}-{secrets.token_hex(3)}"
    start = time.monotonic()
    run(podman.podman(
        "run", "--detach", "--name", name, *RUN_OPTIONS, *AS_COMPOSE_RUNS_IT, *mounts,
        "--env", f"HEYGEMD_WEB__TOKEN={secrets.token_hex(16)}", "--env", "HEYGEMD_ENGINE__NAME=mouthwarp", image,
    ))  # fmt: skip
    try:
        run(podman.podman("exec", name, "heygemd", "demo", "--name", "demo-lesson"))
        status = wait_for_status(podman, name, folders["outbox"] / "demo-lesson" / "status.json", deadline_s=600)
        timings["render"] = time.monotonic() - start
        assert status["state"] == "done", status

        health = run(podman.podman("healthcheck", "run", name), check=False)
        assert health.returncode == 0, f"healthcheck: {health.stdout} {health.stderr}"
        wrong = ["--env", "HEYGEMD_WEB__TOKEN=not-the-token"]
        refused = run(podman.podman("exec", *wrong, name, *healthcheck_command()), check=False)
        assert refused.returncode == 1 and "401" in refused.stderr, refused

        run(podman.podman("stop", "--time", "60", name))
        assert container_state(podman, name)["ExitCode"] == 0
        logs = run(podman.podman("logs", name))
    finally:
        run(podman.podman("rm", "--force", "--volumes", name), check=False)
        timings["run"] = time.monotonic() - start

    lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # everything on stderr is a JSON event, Python's warnings too
    names = [event["event"] for event in events]
    for expected in ("web.ready", "job.done", "daemon.stopped"):
        assert expected in names, names
    refusal = [e for e in events if e["event"] == "web.login_failed"]  # the healthcheck with the wrong token above
    assert [(e["why"], e["client"]) for e in refusal] == [("wrong bearer token", "127.0.0.1")], refusal
    assert not [e for e in events if e["level"] in ("warning", "error", "critical") and e not in refusal], lines

    outputs = sorted(p.name for p in (folders["outbox"] / "demo-lesson").glob("*.mp4"))
    assert outputs == ["presenter-1.mp4", "presenter-2.mp4"]
    for output in outputs:
        path = folders["outbox"] / "demo-lesson" / output
        assert ffprobe_streams(path) == ["audio", "video"]
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (uid, gid) and info.st_mode & 0o020, oct(info.st_mode)


@pytest.mark.slow
def test_image_refuses_the_web_server_without_a_token(podman: Podman, image: str) -> None:
    """Started with no token, the image's web server (bound to every address) refuses to start, and says why."""
    done = run(podman.podman("run", "--rm", *RUN_OPTIONS, image), check=False, timeout=300)
    assert done.returncode == 1, done
    assert "no web.token is set" in done.stderr and "HEYGEMD_WEB__TOKEN" in done.stderr, done.stderr
