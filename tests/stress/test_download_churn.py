"""Downloads while package files churn under them: truncated in place, rewritten in place (same size,
mtime kept: `cp -p`, `rsync --inplace`), copied over (`cp`), swapped for FIFOs. The index lags on purpose
(polling, a long interval). Every answer is a whole file as it was at some instant of the request, a 404,
or a body cut short (Content-Length unmet); never a hang, never a 5xx; the server's CPU does not run away.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from spkbuilder import build_spk

from stress import sized

pytestmark = pytest.mark.stress

SECONDS = sized(20, 120)
FILES = 4
VERSIONS = 3  # per file, all the same size: a rewrite in place keeps the size
PAYLOAD = 8 << 20  # more than loopback buffers hold: a slow reader keeps the server mid-file
CLIENTS = 3
SOCKET_TIMEOUT = 10.0  # a read waiting this long is a hang

# A file's content at an instant: ("full", v), ("prefix", v) (truncated, or copied over and still being
# written: some prefix of version v), ("mix", u, v) (v being written over u in place: v's head, u's tail),
# ("fifo",) (no content).
State = Tuple[Any, ...]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_difference(a: bytes, b: bytes) -> int:
    """The first index where a and b (same length) differ; len(a) when equal."""
    lo, hi = 0, len(a)
    if a == b:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class Churn:
    """The folder's files, what each held since when, and the mutations that change them."""

    def __init__(self, folder: Path, tmp: Path, rng: random.Random):
        self.rng = rng
        self.paths = [folder / f"f{n}.spk" for n in range(FILES)]
        self.versions: List[List[bytes]] = []
        for n in range(FILES):
            built = [build_spk(tmp / f"v{n}-{v}.spk", {"package": f"f{n}"}, package_tgz=rng.randbytes(PAYLOAD))
                     for v in range(VERSIONS)]
            self.versions.append([p.read_bytes() for p in built])
        self.history: List[List[Tuple[float, State]]] = [[] for _ in range(FILES)]
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        for n, path in enumerate(self.paths):
            path.write_bytes(self.versions[n][0])
            self.history[n].append((time.monotonic(), ("full", 0)))

    def state(self, n: int) -> State:
        return self.history[n][-1][1]

    def note(self, n: int, state: State) -> None:
        with self.lock:
            self.history[n].append((time.monotonic(), state))

    def states_between(self, n: int, start: float, end: float) -> List[State]:
        """What file n held at some instant of [start, end]."""
        with self.lock:
            history = list(self.history[n])
        before = [s for t, s in history if t <= start][-1:]
        return before + [s for t, s in history if start < t <= end]

    def mutate(self) -> None:
        n = self.rng.randrange(FILES)
        path, state = self.paths[n], self.state(n)
        v = self.rng.randrange(VERSIONS)
        new = self.versions[n][v]
        if state[0] != "full":  # truncated or a FIFO: copy a version over it (a FIFO is replaced, not opened)
            if state[0] == "fifo":
                path.unlink()
            self.note(n, ("prefix", v))
            with open(path, "wb") as fh:
                fh.write(new)
            self.note(n, ("full", v))
            self.counts["restore"] += 1
            return
        kind = self.rng.choice(("truncate", "in place", "cp -p", "fifo"))
        self.counts[kind] += 1
        st = path.stat()
        if kind == "truncate":
            self.note(n, ("prefix", state[1]))
            os.truncate(path, self.rng.randrange(len(new)))
        elif kind == "in place":  # rsync --inplace: same inode, same size, the mtime kept
            self.note(n, ("mix", state[1], v))
            with open(path, "r+b") as fh:
                fh.write(new)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            self.note(n, ("full", v))
        elif kind == "cp -p":  # truncated to nothing, written again, the mtime kept
            self.note(n, ("prefix", v))
            with open(path, "wb") as fh:
                fh.write(new)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            self.note(n, ("full", v))
        else:
            self.note(n, ("fifo",))
            path.unlink()
            os.mkfifo(path)

    def matches(self, n: int, state: State, body: bytes, offset: int, total: int) -> bool:
        """Whether `body` is bytes offset.. of a file of `total` bytes that file n held in `state`."""
        if state[0] == "fifo":
            return False
        new = self.versions[n][state[-1]]
        end = offset + len(body)
        if state[0] == "full":
            return total == len(new) and new[offset:end] == body
        if state[0] == "prefix":
            return total <= len(new) and end <= total and new[offset:end] == body
        old = self.versions[n][state[1]]  # mix: the new version up to some point, then the old one
        cut = first_difference(body, new[offset:end])
        return total == len(new) and body[cut:] == old[offset + cut:end]


def read_body(response: http.client.HTTPResponse, pause: float) -> bytes:
    """The body, or what came before the server closed early; `pause` seconds between 64 KiB reads."""
    parts = []
    try:
        while True:
            part = response.read(1 << 16)
            if not part:
                break
            parts.append(part)
            time.sleep(pause)
    except ConnectionResetError:
        pass  # closed early
    return b"".join(parts)


def download(port: int, churn: Churn, n: int, etags: Dict[int, str], rng: random.Random) -> str:
    """One download of file n, checked; its outcome."""
    headers: Dict[str, str] = {}
    kind = rng.random()
    if kind < 0.5:
        start = rng.randrange(len(churn.versions[n][0]))
        headers["Range"] = f"bytes={start}-{start + rng.randrange(1 << 21)}"
        if kind < 0.25 and n in etags:
            headers["If-Range"] = etags[n]  # a resumed download, maybe of a version since replaced
    slow = rng.random() < 0.5  # a slow reader with a small window: the server is mid-file when it changes
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT)
    conn.sock = socket.socket()
    conn.sock.settimeout(SOCKET_TIMEOUT)
    if slow:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    try:
        conn.sock.connect(("127.0.0.1", port))
        conn.request("GET", f"/download/f{n}.spk", headers=headers)
        response = conn.getresponse()
        length = int(response.getheader("Content-Length") or -1)
        body = read_body(response, pause=0.002 if slow else 0)
    except socket.timeout as exc:
        raise AssertionError(f"f{n}.spk {headers}: no answer within {SOCKET_TIMEOUT} s") from exc
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return "closed before the status"
    finally:
        conn.close()
    ended = time.monotonic()
    status = response.status
    assert status < 500, f"f{n}.spk {headers}: {status}"
    if status in (404, 416):  # 416: a range past the end of a truncated copy the index took in meanwhile
        return str(status)
    assert status in (200, 206), f"f{n}.spk {headers}: {status}"
    offset, total = 0, length
    if status == 206:
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.getheader("Content-Range", ""))
        assert found, response.getheader("Content-Range")
        offset, total = int(found[1]), int(found[3])
    states = churn.states_between(n, began, ended)
    assert any(churn.matches(n, s, body, offset, total) for s in states), (
        f"f{n}.spk {headers}: {status}, {len(body)} of {length} bytes from {offset}: not the file as it was "
        f"during the request (held: {states})")
    etags[n] = response.getheader("ETag")
    if len(body) < length:
        return "cut short"
    return f"whole {status}"


def test_downloads_while_files_churn(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    rng = random.Random(15)
    folder = tmp_path / "packages"
    folder.mkdir()
    churn = Churn(folder, tmp_path, rng)
    server = run_server("--packages", str(folder), "--watch", "poll", "--poll-interval", "1s")
    pid = server.proc.pid
    stop = threading.Event()
    outcomes: Counter = Counter()
    failures: List[BaseException] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        crng = random.Random(seed)
        etags: Dict[int, str] = {}  # each file's last ETag, for If-Range
        try:
            while not stop.is_set():
                outcome = download(server.port, churn, crng.randrange(FILES), etags, crng)
                with lock:
                    outcomes[outcome] += 1
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    def mutator() -> None:
        try:
            while not stop.wait(rng.uniform(0.05, 0.3)):
                churn.mutate()
        except BaseException as exc:
            failures.append(exc)

    cpu_before, started = cpu_seconds(pid), time.monotonic()
    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(CLIENTS)]
    threads.append(threading.Thread(target=mutator, daemon=True))
    for thread in threads:
        thread.start()
    stop.wait(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(SOCKET_TIMEOUT * 3)
    elapsed = time.monotonic() - started
    cpu_churn = cpu_seconds(pid) - cpu_before
    assert not [t for t in threads if t.is_alive()], "a client or the mutator hung"
    if failures:
        raise failures[0]

    # Afterwards: nothing left spinning, the server answers at once and serves every file whole again.
    quiet_before = cpu_seconds(pid)
    time.sleep(2.0)
    cpu_quiet = cpu_seconds(pid) - quiet_before
    probe = time.monotonic()
    assert server.json("/health")["status"] == "ok"
    health_s = time.monotonic() - probe
    assert health_s < 1.0
    for n, path in enumerate(churn.paths):  # each file whole again (a new inode: the index looks again)
        fresh = tmp_path / f"fresh{n}.spk"
        fresh.write_bytes(churn.versions[n][0])
        os.replace(fresh, path)
    deadline = time.monotonic() + 15
    for n, path in enumerate(churn.paths):
        expected = path.read_bytes()
        while True:
            try:
                got = server.get(f"/download/f{n}.spk")[2]
            except OSError:  # 404 while the index catches up
                got = None
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == expected, f"f{n}.spk not served whole after the churn"
    log = server.output()
    assert "Traceback" not in log

    total = sum(outcomes.values())
    figures(f"{total} downloads in {elapsed:.1f} s: {dict(outcomes)}; mutations {dict(churn.counts)}")
    figures(f"server CPU {cpu_churn:.2f} s during the churn ({cpu_churn / elapsed:.0%} of one core), "
            f"{cpu_quiet:.2f} s in 2 s quiet after; /health {health_s * 1000:.0f} ms after")
    assert outcomes["whole 200"] + outcomes["whole 206"] > 0 and outcomes["404"] > 0
    assert cpu_quiet < 0.5, "the server keeps burning CPU after the churn"
