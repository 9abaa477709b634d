"""Serves the HTTP API with uvicorn on a background thread of the daemon's process."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from streamlearn.errors import StreamlearnError

__all__ = ["ApiServer", "ApiStartError", "REQUEST_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: A request must arrive whole (head and body) within this many seconds of its connection opening,
#: or of the previous response on it; otherwise the connection is closed.
REQUEST_TIMEOUT_S = 60.0


class ApiStartError(StreamlearnError):
    """The HTTP API could not start (most often: the port is taken)."""


def _timed_protocol(timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request has not arrived whole in ``timeout_s``.

    uvicorn times out only idle keep-alive connections, and any byte resets that timer: a client
    that opens connections and sends half a request head would hold each open for good, until the
    process runs out of file descriptors (its Kafka sockets and checkpoint files with it).
    """

    class TimedH11Protocol(H11Protocol):
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            cycle = self.cycle
            waiting = cycle is None or cycle.response_complete or cycle.more_body  # no request in full yet
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol


class ApiServer:
    """uvicorn running ``app`` on ``host:port`` in a daemon thread; ``start()`` waits until it listens."""

    def __init__(self, app: FastAPI, host: str, port: int, *, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.host = host
        self.requested_port = port
        # log_config=None keeps the process's logging setup; signals stay with the run loop.
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", server_header=False, http=_timed_protocol(request_timeout_s))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="streamlearn-api", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one only when that was 0)."""
        for server in getattr(self._server, "servers", []) or []:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.requested_port

    def start(self, timeout_s: float = 15.0) -> ApiServer:
        """Start serving; raise ApiStartError if it is not listening within ``timeout_s``."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise ApiStartError(f"the HTTP API could not listen on {self.host}:{self.requested_port} "
                                    "(port in use or address not available)")
            if time.monotonic() > deadline:
                self.stop()
                raise ApiStartError(f"the HTTP API did not start on {self.host}:{self.requested_port} "
                                    f"within {timeout_s:.0f}s")
            time.sleep(0.02)
        logger.info("http api listening", extra={"url": f"http://{self.host}:{self.port}"})
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask uvicorn to finish open requests and exit; wait up to ``timeout_s``."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("http api did not stop within %.0fs", timeout_s)
