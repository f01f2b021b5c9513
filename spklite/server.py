"""Run it: index + watcher + waitress, background upkeep, clean shutdown (SPEC 3.4)."""

from __future__ import annotations

import gc
import logging
import logging.handlers
import os
import queue
import re
import threading
import time

import waitress

from spklite import __version__, config, listener, memory, watch
from spklite.app import FORM_KEY, make_app
from spklite.channels import mask
from spklite.index import Index, open_index, printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, List, Mapping

log = logging.getLogger("spklite")
access_log = logging.getLogger("spklite.access")

START_REJECTED_SHOWN = 5
SNAPSHOT_EVERY = 5.0  # seconds between snapshot writes at most: flash wears out
MD5_LOOK = 0.2  # seconds between looks for new files to hash
MASK_SERIAL = re.compile(r"(?i)(ds_sn=)[^&]*")
PLAIN = re.compile(r'[ !#-\[\]-~]*\Z')  # printable ASCII but the quote and the backslash: logged as it is


def loggable(value: str) -> str:
    """A request's value fit for one log line, unambiguous and readable.

    A WSGI string holds raw bytes (latin-1): they are read as UTF-8 where they are. Controls (a CR/LF would start
    a forged line, ESC drives terminals) and bytes that are not UTF-8 are escaped by index.printable, and the
    quote and the backslash too: a logged value never ends its quotes early.
    """
    if PLAIN.match(value):
        return value
    try:
        value = value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # not a WSGI byte string: taken as characters
        pass
    return printable(value.replace("\\", "\\\\").replace('"', '\\"'))


def access_logged(app: Callable[..., Any]) -> Callable[..., Any]:
    """WSGI middleware: one log line per request, the NAS serial number masked, values escaped."""

    def logged(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = mask(environ.get("PATH_INFO", ""))  # as received (Bottle replaces it), a secret prefix masked
        started = time.monotonic()

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            level = logging.DEBUG if path == "/health" else logging.INFO  # probes would drown the rest
            if access_log.isEnabledFor(level):  # `--log-level warning`: no access log, and no cost
                access_log.handle(access_record(environ, path, status, headers, started, level))
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def access_record(environ: dict, path: str, status: str, headers: list, started: float, level: int
                  ) -> logging.LogRecord:
    # A catalog POST's form (DSM 3-6) is logged with the query: it is where its parameters are.
    query = "&".join(q for q in (environ.get("QUERY_STRING", ""), environ.get(FORM_KEY, "")) if q)
    if "ds_sn" in query.lower():
        query = MASK_SERIAL.sub(r"\1***", query)
    size = next((v for k, v in headers if k.lower() == "content-length"), "-")
    args = (
        loggable(environ.get("REMOTE_ADDR", "-")),  # from X-Forwarded-For behind a trusted proxy
        loggable(environ.get("REQUEST_METHOD", "-")),
        loggable(path),
        "?" + loggable(query) if query else "",
        status.split(" ", 1)[0],
        size,
        (time.monotonic() - started) * 1000,  # to the answer's headers: a download's body is not in it
        loggable(environ.get("HTTP_USER_AGENT", "-")),  # a NAS's carries its model and DSM build
    )
    # Made here, not by access_log.info(): the line names no source line, so the caller's frame is not looked up.
    return access_log.makeRecord(access_log.name, level, "", 0, '%s "%s %s%s" %s %s %.1fms "%s"', args, None)


class Upkeep(threading.Thread):
    """md5 of new files as soon as the index has them, and throttled snapshot writes, off the request path.

    Soon: replicas behind one balancer differ until each has hashed a new file (its answers lack the md5), so
    that wait is the poll interval and the hashing, not this thread's rhythm (it was up to SNAPSHOT_EVERY).
    """

    def __init__(self, index: Index):
        super().__init__(name="spklite-upkeep", daemon=True)
        self.index = index
        self.stop = threading.Event()

    def run(self) -> None:
        hashed, saved, pause = None, time.monotonic() - SNAPSHOT_EVERY, SNAPSHOT_EVERY
        while not self.stop.is_set():
            version = self.index.current.version
            if version != hashed:  # a look at the state's version: no walk over the records while nothing changes
                hashed = version
                self.index.fill_md5(self.index.pending_md5(), self.stop)
            if time.monotonic() - saved >= pause:
                saved = time.monotonic()
                self.index.save_snapshot()  # writes only when something changed
                memory.trim()  # what requests, hashing and the snapshot freed goes back to the system
                # A large folder's snapshot takes a while (~2 s at 50,000 files): never a tenth of the time.
                pause = max(SNAPSHOT_EVERY, 10 * (time.monotonic() - saved))
            self.stop.wait(MD5_LOOK)


def waitress_options(cfg: Mapping[str, Any]) -> dict:
    options = {
        "host": cfg["host"],
        "port": cfg["port"],
        "threads": cfg["server.threads"],
        # The setting counts clients; the listener closes idle ones over it (see listener.HEADROOM).
        "connection_limit": cfg["server.connection-limit"] + listener.HEADROOM,
        "channel_timeout": int(cfg["server.channel-timeout"]),
        "asyncore_use_poll": True,  # select() fails on a socket numbered 1024 or more: a limit over ~1000
        # Uploads have their own limit (waitress refuses a body of its limit or more, so +1).
        "max_request_body_size": max(cfg["server.max-request-body-size"],
                                     cfg["publish.max-size"] + 1 if cfg["publish.keys"] else 0),
        "max_request_header_size": cfg["server.max-request-header-size"],
        "ident": "spklite",
        "clear_untrusted_proxy_headers": True,
    }
    if cfg["server.trusted-proxy"]:
        options.update(
            trusted_proxy=cfg["server.trusted-proxy"],
            trusted_proxy_count=cfg["server.trusted-proxy-count"],
            trusted_proxy_headers=set(cfg["server.trusted-proxy-headers"]),
        )
    return options


class InProcessQueueHandler(logging.handlers.QueueHandler):
    """The record goes as it is: formatting (once) is the log thread's work."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # the stdlib formats here, for queues that cross processes

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: the queue is thread-safe, and eight worker threads contending for a lock
        # (and the GIL with it) at every access line cost ~40 µs of CPU per request (make bench, 16 clients).
        passed = self.filter(record)
        if passed:
            self.emit(record if isinstance(passed, logging.LogRecord) else record)
        return bool(passed)


class LogThread:
    """Log records are written by one thread, off the request path.

    A handler holds its lock while it writes; with several worker threads
    writing access lines, that lock and the GIL convoy (make bench: 5x the
    CPU per request). Request threads now only put records on a queue.
    """

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self.handlers = self.root.handlers[:]
        self.listener = logging.handlers.QueueListener(queue.SimpleQueue(), *self.handlers,
                                                       respect_handler_level=True)

    def __enter__(self) -> "LogThread":
        self.root.handlers = [InProcessQueueHandler(self.listener.queue)]
        self.listener.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.listener.stop()  # writes what is still queued
        self.root.handlers = self.handlers


class Rescan:
    """SIGHUP: the packages folder scanned again (a change the watch cannot see), in a thread, off the event
    loop. Signals during a scan ask for one scan more, not one each."""

    def __init__(self, index: Index):
        self.index = index
        self.lock = threading.Lock()
        self.wanted = self.running = False

    def __call__(self) -> None:
        log.info("received SIGHUP: scanning %s again", self.index.root)
        with self.lock:
            self.wanted = True
            if self.running:
                return
            self.running = True
        threading.Thread(target=self.run, name="spklite-rescan", daemon=True).start()

    def run(self) -> None:
        while True:
            with self.lock:
                if not self.wanted:
                    self.running = False
                    return
                self.wanted = False
            try:
                state = self.index.scan()
            except Exception:  # the server outlives a failed scan; the watch goes on
                log.exception("re-scan failed")
            else:
                log.info("re-scan done: %d packages, %d rejected", len(state.records), len(state.rejected))


def ensure_default_packages_folder(cfg: Mapping[str, Any]) -> None:
    """On first run, make the default packages folder (<home>/packages) so a person knows where to put files."""
    packages = cfg["filesystem.packages"]
    if os.path.isdir(packages):
        return
    if os.path.dirname(packages) == cfg["home"] and os.path.isdir(cfg["home"]):
        try:
            os.mkdir(packages)
            log.info("created %s: put .spk files there", packages)
            return
        except OSError:
            pass
    log.warning("packages folder %s does not exist (yet): serving an empty catalog until it does", packages)


def listen_urls(server: Any) -> List[str]:
    """Where the server listens, as URLs: a name that resolves to several addresses (localhost: 127.0.0.1
    and ::1) gets waitress a socket for each."""
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/" for host, port in listening]


def log_start(cfg: Mapping[str, Any], index: Index, watch_mode: str, seconds: float) -> None:
    """What an operator needs first: which settings, which folders, what was found and what was not usable."""
    state = index.current
    used = cfg["config"] if os.path.isfile(cfg["config"]) else "none"
    log.info("spklite %s, config file: %s", __version__, printable(used))
    log.info("packages: %s, cache: %s, watch: %s", printable(index.root), printable(index.cache_dir), watch_mode)
    log.info("%d packages, %d rejected (%d from snapshot, %d parsed, %.2f s)", len(state.records),
             len(state.rejected), index.stats["from_snapshot"], index.stats["parsed"], seconds)
    for rel, found in list(state.rejected.items())[:START_REJECTED_SHOWN]:
        log.warning("rejected %s: %s", printable(rel), printable(found.reason))
    if len(state.rejected) > START_REJECTED_SHOWN:
        log.warning("and %d more rejected files: see /v1/rejected or `spklite scan`",
                    len(state.rejected) - START_REJECTED_SHOWN)


def serve(cfg: Mapping[str, Any]) -> int:
    # Under load waitress warns of its task queue at every request: normal for a busy server,
    # and a flood that would fill a small device's journal.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    memory.configure()  # before any thread: they take their malloc arenas as they start
    with LogThread():
        return _serve(cfg)


def _serve(cfg: Mapping[str, Any]) -> int:
    keyrings = config.keyring_texts(cfg)
    config.write_first_run(cfg)  # before the default packages folder: it makes the home
    ensure_default_packages_folder(cfg)
    index = open_index(cfg)
    watcher: watch.Watcher = watch.Watcher()
    app = make_app(cfg, index, keyrings, watch_mode=lambda: watcher.mode)  # bad settings fail here, early
    started = time.monotonic()
    index.load_snapshot()
    # The watch is set before the scan, so nothing that happens during the scan is missed.
    watcher = watch.start(index, cfg["watch"], cfg["poll-interval"])
    index.scan()
    index.log_changes = True
    log_start(cfg, index, watcher.mode, time.monotonic() - started)
    try:
        server = waitress.create_server(access_logged(app), **waitress_options(cfg))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", cfg["host"], cfg["port"], exc.strerror or exc)
        watcher.stop()
        return 1
    upkeep = Upkeep(index)
    upkeep.start()
    counts = app.server.counts
    counts.start(cfg["server.counts-interval"])
    # SIGTERM/SIGINT: running downloads finish (up to a deadline), then the snapshot; SIGHUP: a re-scan.
    supervisor = listener.Supervisor(server, cfg["server.connection-limit"], on_hangup=Rescan(index))
    # cli.main turned the collector off for the start-up. One pass for its garbage, then its objects,
    # which stay for good, are moved out of the collector's sight: its passes look at what requests make.
    gc.collect()
    gc.freeze()
    gc.enable()
    memory.trim()  # the start-up's garbage (parsed files, snapshot lines) freed
    log.info("serving on %s", " and ".join(listen_urls(server)))
    try:
        server.run()
    finally:
        watcher.stop()
        upkeep.stop.set()
        upkeep.join(timeout=5)
        index.save_snapshot()
        counts.stop()  # the last write of the download counts
        supervisor.close()  # till here a signal more cannot cut the snapshot short
        log.info("stopped")
    return 0
