"""Running the web app with uvicorn: on its own (``heygemd web``) or in a thread of ``heygemd run``.

The listening socket is bound before anything else, so a busy port or a refused bind is reported at start
with a clear error instead of a dead thread; a non-loopback bind without a token is refused (``check_bind``).
"""

from __future__ import annotations

import socket
import threading

import structlog
import uvicorn

from heygemd.control import Control
from heygemd.errors import ConfigError
from heygemd.settings import Settings
from heygemd.web.auth import check_bind

log = structlog.get_logger("heygemd.web")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="Choose a free web.port, or stop the program that uses it.",
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def prepare(settings: Settings, control: Control) -> tuple[uvicorn.Server, socket.socket]:
    """Check the bind is allowed, bind it, and build the server (not yet running) acting on jobs through
    ``control``."""
    check_bind(settings.web)
    from heygemd.web.app import create_app

    sock = bind_socket(settings.web.host, settings.web.port)
    config = uvicorn.Config(
        create_app(settings, control=control),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    host, port = sock.getsockname()[:2]
    log.info("web.ready", url=f"http://{host}:{port}/", host=host, port=port, token=settings.web.token is not None)
    return uvicorn.Server(config), sock


def serve(settings: Settings, control: Control) -> int:
    """``heygemd web``: serve until SIGTERM/SIGINT."""
    server, sock = prepare(settings, control)
    server.run(sockets=[sock])
    return 0


def start_in_thread(settings: Settings, control: Control) -> threading.Thread:
    """``[web] enabled = true`` in ``heygemd run``: serve from a daemon thread next to the worker, so the pages
    and the API answer while a job renders; it ends with the process."""
    server, sock = prepare(settings, control)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="heygemd-web", daemon=True)
    thread.start()
    return thread
