"""Processes and clients for the benchmark: start servers, poll them, load them.

Load comes from wrk (a C client, so the client does not compete with the
server for the GIL) with bench/load.lua; a Python keep-alive client stands in
only where wrk is not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
LUA = HERE / "load.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A server process on a loopback port, its log in a file (a pipe nobody reads would block it)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, port: int, env: Optional[Dict[str, str]] = None):
        self.name, self.argv, self.log, self.port, self.env = name, list(argv), log, port, env
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0

    def start(self) -> "Process":
        with open(self.log, "ab") as out:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        """VmRSS from /proc, in MiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def wait_answer(self, path: str, timeout: float = 60.0, **request: Any) -> Tuple[float, bytes]:
        """Seconds from start to the first 200 answer for `path`, and that answer."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                status, body = fetch(self.port, path, timeout=5, **request)
                if status == 200:
                    return time.perf_counter() - self.started, body
            except OSError:
                pass
            time.sleep(0.004)
        raise RuntimeError(f"{self.name}: no answer to {path} within {timeout} s; see {self.log}")

    def health(self) -> Dict[str, Any]:
        status, body = fetch(self.port, "/health")
        if status != 200:
            raise RuntimeError(f"{self.name}: /health answered {status}")
        return json.loads(body)

    def settle(self, packages: Optional[int] = None, timeout: float = 120.0) -> Dict[str, Any]:
        """Wait until background md5s are done (and the index holds `packages` files)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health.get("md5_pending", 0) == 0 and (packages is None or health["packages"] == packages):
                return health
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not settled: {health}")
            time.sleep(0.05)


def fetch(port: int, path: str, method: str = "GET", body: Optional[str] = None,
          headers: Optional[Dict[str, str]] = None, timeout: float = 30) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- load ---------------------------------------------------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def load(port: int, *, conns: int, seconds: float, paths: Sequence[str] = ("/",), method: str = "GET",
         body: str = "", header: str = "", delay_ms: int = 0, threads: int = 1, paths_file: str = ""
         ) -> Dict[str, float]:
    """Drive the server with `conns` keep-alive clients; requests/s, MB/s and latencies (ms).

    One wrk thread leaves the second core to the server; bulk downloads want two. With `paths_file` (a file
    of paths, one a line), wrk asks each once and stops (at `seconds` at the latest)."""
    if have_wrk():
        raw = _wrk(port, conns, seconds, paths, method, body, header, delay_ms, threads, paths_file)
    else:
        if paths_file:
            paths = Path(paths_file).read_text().split()
        raw = _python_load(port, conns, seconds, paths, method, body, header, delay_ms)
    secs = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / secs,
        "mbps": raw["bytes"] / secs / 1e6,
        "p50": raw["p50_us"] / 1000,
        "p99": raw["p99_us"] / 1000,
        "max": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["errors"] + raw["status_errors"] + raw["timeouts"],
    }


def _wrk(port: int, conns: int, seconds: float, paths: Sequence[str], method: str, body: str,
         header: str, delay_ms: int, threads: int, paths_file: str = "") -> Dict[str, Any]:
    env = dict(os.environ, BENCH_METHOD=method, BENCH_BODY=body, BENCH_PATHS="\n".join(paths),
               BENCH_HEADER=header, BENCH_DELAY=str(delay_ms), BENCH_PATHS_FILE=paths_file)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(LUA), f"http://127.0.0.1:{port}{paths[0]}"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise RuntimeError(f"wrk gave no result: {out.stdout} {out.stderr}")


def _python_load(port: int, conns: int, seconds: float, paths: Sequence[str], method: str, body: str,
                 header: str, delay_ms: int) -> Dict[str, Any]:
    """The fallback: threads with keep-alive http.client connections (slower than the server)."""
    headers = dict([tuple(p.strip() for p in header.split(":", 1))]) if header else {}
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    latencies: List[float] = []
    totals = {"bytes": 0, "errors": 0, "status_errors": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: List[float] = []
        got = bad = failed = 0
        n = offset
        while time.perf_counter() < deadline:
            if delay_ms:
                time.sleep(delay_ms / 1000)
            path = paths[n % len(paths)]
            n += 1
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                got += len(response.read())
                bad += response.status >= 400
                mine.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()
        with lock:
            latencies.extend(mine)
            totals["bytes"] += got
            totals["errors"] += failed
            totals["status_errors"] += bad

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(conns)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    latencies.sort()
    us = [x * 1e6 for x in latencies] or [0.0]
    return {
        "requests": len(latencies), "duration_us": (time.perf_counter() - started) * 1e6,
        "p50_us": percentile(us, 50), "p99_us": percentile(us, 99), "max_us": us[-1], "timeouts": 0,
        **totals,
    }


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median_of(runs: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Per metric, the median over repeated runs (errors are summed)."""
    merged = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    merged["errors"] = sum(r["errors"] for r in runs)
    return merged


# -- misbehaving clients ------------------------------------------------------------------------------------


def request_bytes(path: str, method: str = "GET", body: str = "", header: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if header:
        lines.append(header)
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def abort_midway(port: int, request: bytes, after: int) -> int:
    """Send a request, read `after` bytes of the answer, then reset the connection; bytes read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = 0
    try:
        sock.sendall(request)
        while got < after:
            chunk = sock.recv(min(65536, after - got))
            if not chunk:
                break
            got += len(chunk)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        sock.close()
    return got


class Readers:
    """Clients that each send one request and read the answer at a limited rate (a NAS on a slow or
    busy link), in background threads, until the answer ends or the block is left."""

    def __init__(self, port: int, request: bytes, count: int, rate: float, chunk: int = 65536,
                 rcvbuf: Optional[int] = None):
        self.port, self.request, self.rate, self.chunk, self.rcvbuf = port, request, rate, chunk, rcvbuf
        self.received = [0] * count
        self.done = [False] * count
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> "Readers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _read(self, i: int) -> None:
        sock = socket.socket()
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # a small window
        sock.settimeout(10)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.request)
            started = time.monotonic()
            while not self._stop.is_set():
                data = sock.recv(self.chunk)
                if not data:
                    self.done[i] = True
                    break
                self.received[i] += len(data)
                ahead = started + self.received[i] / self.rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
        except OSError:
            pass
        finally:
            sock.close()

