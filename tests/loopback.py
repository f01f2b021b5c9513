"""A stdlib HTTP(S) server on 127.0.0.1 in a thread: the base of the tests' crafted package sources."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that gives up on a silent client and writes no log lines."""

    timeout = 10

    def log_message(self, *args: Any) -> None:
        pass


class LoopbackServer:
    """Serves `handler` on a free loopback port (with TLS when `tls` is given) until stop(); `url` is its base."""

    def __init__(self, handler: type, tls: Optional[ssl.SSLContext] = None):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
