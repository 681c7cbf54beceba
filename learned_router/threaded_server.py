"""Serving an ASGI app with uvicorn in a daemon thread: the simulated providers of the demo and the tests,
and the gateway in the tests and benchmarks, run this way on loopback.

uvicorn is imported inside :func:`serve_in_thread`.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServerHandle", "serve_in_thread"]


@dataclass
class ServerHandle:
    """A uvicorn server running in a daemon thread. ``stop()`` (or leaving the ``with`` block) ends it."""

    host: str
    port: int
    server: Any = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                    ready_timeout_s: float = 10.0) -> ServerHandle:
    """Serve ``app`` with uvicorn in a daemon thread; return once it accepts connections.

    ``port=0`` picks a free port (bound here, before the thread starts, so there is no race).
    Raises RuntimeError when the server does not start within ``ready_timeout_s``.
    """
    import uvicorn

    # proto=IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only for sockets that say they are TCP;
    # without it every response stalls ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=bound_port, loop="asyncio", lifespan="off", log_config=None,
                            log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"sim-server-{bound_port}")
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"server on {host}:{bound_port} did not start")
        time.sleep(0.005)
    return ServerHandle(host=host, port=bound_port, server=server, thread=thread)
