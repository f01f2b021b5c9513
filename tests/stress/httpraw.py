"""Raw HTTP over a socket: send exactly the bytes given (urllib would refuse most of them)."""

from __future__ import annotations

import http.client
import socket
from typing import Dict, List, Optional, Tuple

Response = Tuple[Optional[int], Dict[str, str], bytes]


def exchange(port: int, request: bytes, timeout: float = 15.0) -> Response:
    """Send one request, read the whole answer: (status or None if none came, headers, body).

    A server that refuses an oversized request may close before the client has
    sent it all; what it answered (if anything) is still read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock, method=request.split(b" ", 1)[0].decode("latin-1"))
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
            return None, {}, b""
        try:
            body = response.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        except ConnectionResetError:
            body = b""
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def build(method: str, target: str, headers: Dict[str, str], body: bytes = b"") -> bytes:
    """Request bytes, UTF-8; a lone surrogate U+DCxx is the raw byte xx (invalid UTF-8 on purpose)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if (body or method in ("POST", "PUT")) and "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def still_open(sockets: List[socket.socket]) -> int:
    """How many the server has not closed (a closed one reads as end of stream)."""
    count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            count += sock.recv(1) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count
