"""What waitress leaves to the program around it: signals, idle connections at the limit, ambiguous framing.

`Supervisor` is one more dispatcher in waitress' own event loop, so it acts between socket events, never
in the middle of one (a signal handler that raised there could cut a send in two). It reads signals from
a wakeup socket, closes the longest-idle connections when more than the limit are open (idle clients
must not lock out the NAS that asks next), and on SIGTERM/SIGINT stops listening and lets the running
requests finish, up to a deadline.
"""

from __future__ import annotations

import heapq
import logging
import re
import signal
import socket
import time

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, MultiSocketServer

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger("spklite")

# Seconds the running downloads get after SIGTERM. systemd (TimeoutStopSec), procd (term_timeout) and the
# DSM package's stop script wait 20 s before they kill: the rest is for the threads and the snapshot.
SHUTDOWN_DEADLINE = 12.0
# waitress counts its own sockets (listening sockets, their wake-up pipes, the supervisor) in its
# connection limit, and an idle connection closed to make room goes one turn of the loop after the new
# one came: its limit is the clients' plus this. Only when every connection is busy is it reached.
HEADROOM = 8
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # stop, stop, re-scan
REPORT_EVERY = 60.0  # seconds between warnings that idle connections are being closed
TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)


class FramingParser(HTTPRequestParser):
    """RFC 9112 6.1: a request with both Transfer-Encoding and Content-Length, or Transfer-Encoding in a
    version other than HTTP/1.1 (waitress then ignores it), may be an attempt to smuggle a second request
    past a proxy: it is answered, then the connection closes (what was pipelined behind it is not)."""

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # waitress drops the Transfer-Encoding header once read: its presence is looked for in the bytes.
        if TRANSFER_ENCODING.search(header_plus) and ("CONTENT_LENGTH" in self.headers or self.version != "1.1"):
            self.headers["CONNECTION"] = "close"  # what waitress' task reads to close after answering


class Channel(HTTPChannel):
    parser_class = FramingParser


def is_idle(channel: HTTPChannel) -> bool:
    """No request being answered and nothing left to send (a request may be partly received)."""
    return not (channel.requests or channel.total_outbufs_len or channel.will_close or channel.close_when_flushed)


class Supervisor(wasyncore.dispatcher):
    """Signals, the connection limit and the graceful stop, for the listeners of one waitress server."""

    def __init__(self, server: Any, limit: int, on_hangup: Callable[[], None]):
        self.map: Dict[int, Any] = server.map if isinstance(server, MultiSocketServer) else server._map
        self.listeners = [d for d in self.map.values() if isinstance(d, BaseWSGIServer)]
        for listener in self.listeners:
            listener.channel_class = Channel
        self.limit = limit
        self.on_hangup = on_hangup
        self.stop_at: Optional[float] = None  # stopping: the time.monotonic() by which requests must be done
        self.next_report = 0.0
        self.shed = 0
        reader, self.waker = socket.socketpair()
        reader.setblocking(False)
        self.waker.setblocking(False)
        super().__init__(reader, self.map)
        self.own = len(self.map)  # the loop's sockets that are not clients
        # The C-level handler writes each signal's number to the wakeup socket: that wakes the loop,
        # and handle_read acts on it. The Python-level handlers only replace the default actions.
        self.previous = {signum: signal.signal(signum, lambda *_: None) for signum in HANDLED}
        signal.set_wakeup_fd(self.waker.fileno(), warn_on_full_buffer=False)

    def close(self) -> None:
        """Signals back to what they were; the sockets closed."""
        signal.set_wakeup_fd(-1)
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        super().close()
        self.waker.close()

    # -- the event loop's hooks ------------------------------------------------------------------

    def readable(self) -> bool:
        # Called once per turn of the loop, before it waits (waitress' server does its upkeep there too).
        if self.stop_at is not None:
            self.drain(self.stop_at)
        elif len(self.map) - self.own > self.limit:
            self.shed_idle()
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            received = self.socket.recv(64)
        except BlockingIOError:
            return
        for signum in received:
            if signum not in HANDLED:
                continue
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self.on_hangup()
            elif self.stop_at is None:
                running = sum(not is_idle(c) for c in self.channels())
                log.info("received %s: no new connections; %d running requests have up to %.0f s to finish "
                         "(%s again stops at once)", name, running, SHUTDOWN_DEADLINE, name)
                self.stop_at = time.monotonic() + SHUTDOWN_DEADLINE
                for listener in self.listeners:
                    # Not listener.close(): it would also close the wake-up pipe its running channels use.
                    wasyncore.dispatcher.close(listener)
            else:
                log.info("received %s again: stopping now", name)
                self.stop_at = time.monotonic()

    def handle_close(self) -> None:
        pass  # the wakeup socket is closed by close() only

    # -- connections ---------------------------------------------------------------------------

    def channels(self) -> List[HTTPChannel]:
        return [d for d in self.map.values() if isinstance(d, HTTPChannel)]

    def shed_idle(self) -> None:
        """Close the longest-idle connections that are over the limit."""
        channels = self.channels()
        closing = sum(c.will_close for c in channels)
        excess = len(channels) - closing - self.limit
        if excess <= 0:
            return
        for channel in heapq.nsmallest(excess, filter(is_idle, channels), key=lambda c: c.last_activity):
            channel.will_close = True  # waitress closes it on its next turn (as its own idle timeout does)
            self.shed += 1
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + REPORT_EVERY
            log.warning("more than %d connections (server.connection-limit): closing the longest idle ones "
                        "(%d so far)", self.limit, self.shed)

    def drain(self, deadline: float) -> None:
        """Stopping: idle connections are closed; when no request is left running, or at the deadline,
        the loop ends (SystemExit, which waitress' run() catches to stop its threads)."""
        running = [c for c in self.channels() if not is_idle(c) and not c.will_close]
        for channel in self.channels():
            if is_idle(channel):
                channel.will_close = True
        if running and time.monotonic() < deadline:
            return
        if running:
            log.warning("%d requests still running: stopping anyway", len(running))
        for channel in self.channels():
            channel.handle_close()  # a worker writing to it stops (ClientDisconnected)
        raise SystemExit(0)
