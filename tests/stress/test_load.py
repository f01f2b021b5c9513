"""Load during churn: 32 clients read the catalog and download while a thread adds,
replaces, renames and deletes packages. 0 errors, 0 5xx, every answer consistent,
and at the end the catalog equals the folder."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import unquote

import pytest
from conftest import wait_for
from spkbuilder import build_spk

from stress import sized

pytestmark = pytest.mark.stress

CLIENTS = 32
SECONDS = sized(15, 60)
DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"
# How far the index may lag the folder: inotify settles for 50 ms, parsing takes a few.
LAG = 5.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Churn(threading.Thread):
    """Changes the folder at random and remembers every version it ever wrote.

    New files get fresh names and are written in place (the index must wait for
    close-after-write); replacements are written beside and renamed over, as
    careful copy tools do. So every byte string a download returns must be one
    whole version written here.
    """

    def __init__(self, folder: Path, staging: Path, seed: int):
        super().__init__(name="churn", daemon=True)
        self.folder, self.staging = folder, staging
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.written: Set[str] = set()  # md5 of every version ever written
        self.changed: Dict[str, float] = {}  # relative path -> last change (monotonic)
        self.ops: Dict[str, int] = {"add": 0, "replace": 0, "rename": 0, "delete": 0}
        self.serial = 0
        self.error: Optional[BaseException] = None

    def version(self, package: str) -> bytes:
        self.serial += 1
        path = build_spk(
            self.staging / "next.spk",
            {"package": package, "version": f"1.{self.serial}-1"},
            package_tgz=os.urandom(self.rng.randint(1000, 60_000)),
        )
        data = path.read_bytes()
        self.written.add(md5(data))
        return data

    def files(self) -> List[str]:
        return sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*.spk") if not p.name.startswith(".")
        )

    def touch(self, *paths: str) -> None:
        with self.lock:
            for rel in paths:
                self.changed[rel] = time.monotonic()

    def add(self, initial: bool = False) -> None:
        self.serial += 1
        rel = f"{self.rng.choice(['', 'sub/'])}p{self.serial}.spk"
        data = self.version(f"p{self.serial}")
        self.touch(rel)
        with open(self.folder / rel, "wb") as fh:  # in place, in two writes
            fh.write(data[: len(data) // 2])
            fh.flush()
            if not initial:
                time.sleep(0.005)
            fh.write(data[len(data) // 2 :])
        self.touch(rel)

    def step(self) -> None:
        existing = self.files()
        op = self.rng.choice(["add", "replace", "rename", "delete"]) if len(existing) > 20 else "add"
        if op == "add" or not existing:
            self.add()
        else:
            rel = self.rng.choice(existing)
            if op == "replace":
                tmp = self.folder / f".{self.serial}.tmp"
                tmp.write_bytes(self.version(Path(rel).stem.split("-")[0]))
                self.touch(rel)
                os.replace(tmp, self.folder / rel)
            elif op == "rename":
                self.serial += 1
                new = f"{self.rng.choice(['', 'sub/'])}{Path(rel).stem.split('-')[0]}-r{self.serial}.spk"
                self.touch(rel, new)
                os.rename(self.folder / rel, self.folder / new)
            else:
                self.touch(rel)
                os.unlink(self.folder / rel)
            self.touch(rel)
        self.ops[op] += 1

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(0.005, 0.04)):
                self.step()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def recently_changed(self, rel: str, since: float) -> bool:
        with self.lock:
            return self.changed.get(rel, -1e9) >= since - LAG


class Client(threading.Thread):
    def __init__(self, url: str, churn: Churn, deadline: float, seed: int):
        super().__init__(daemon=True)
        self.url, self.churn, self.deadline = url, churn, deadline
        self.rng = random.Random(seed)
        self.requests = 0
        self.problems: List[str] = []
        self.raced = 0  # answers outdated by a change made meanwhile (allowed, counted)

    def fetch(self, url: str) -> Tuple[int, bytes]:
        self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def run(self) -> None:
        while time.monotonic() < self.deadline and len(self.problems) < 5:
            try:
                self.round()
            except Exception as exc:
                self.problems.append(f"{type(exc).__name__}: {exc}")

    def round(self) -> None:
        started = time.monotonic()
        status, body = self.fetch(self.url + DSM7)
        if status != 200:
            self.problems.append(f"catalog: {status} {body[:200]!r}")
            return
        entries = json.loads(body)["packages"]
        if not entries:
            return
        entry = self.rng.choice(entries)
        rel = unquote(entry["link"].split("/download/", 1)[1])
        if "md5" in entry and entry["md5"] not in self.churn.written:
            self.problems.append(f"{rel}: catalog md5 {entry['md5']} is no version ever written")
        status, data = self.fetch(entry["link"])
        if status == 404 or (status == 200 and md5(data) != entry.get("md5", md5(data))):
            if not self.churn.recently_changed(rel, started):
                self.problems.append(f"{rel}: {status}, unchanged since long before the catalog answer")
            self.raced += 1
        elif status != 200:
            self.problems.append(f"{rel}: download {status}")
        if status == 200 and md5(data) not in self.churn.written:
            self.problems.append(f"{rel}: downloaded bytes are no whole version (md5 {md5(data)})")
        if self.rng.random() < 0.2:
            status, _ = self.fetch(entry["thumbnail"][0])
            if status != 200:
                self.problems.append(f"thumbnail {entry['thumbnail'][0]}: {status}")


def test_load_during_churn(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    folder, staging = tmp_path / "packages", tmp_path / "staging"
    (folder / "sub").mkdir(parents=True)
    staging.mkdir()
    churn = Churn(folder, staging, seed=42)
    for _ in range(40):
        churn.add(initial=True)
    server = run_server("--packages", str(folder))
    assert wait_for(lambda: server.json("/health")["md5_pending"] == 0)
    rss_start = rss_kib(server.proc.pid)

    deadline = time.monotonic() + SECONDS
    clients = [Client(server.url, churn, deadline, seed) for seed in range(CLIENTS)]
    churn.start()
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=SECONDS + 120)
    churn.stop.set()
    churn.join()
    rss_end = rss_kib(server.proc.pid)

    assert churn.error is None, repr(churn.error)
    problems = [p for c in clients for p in c.problems]
    requests = sum(c.requests for c in clients)
    figures(
        f"{SECONDS} s, {CLIENTS} clients: {requests} requests, {len(problems)} errors, "
        f"{sum(c.raced for c in clients)} answers outdated by a concurrent change; churn {churn.ops}; "
        f"server RSS {rss_start / 1024:.1f} MiB at start, {rss_end / 1024:.1f} MiB at end"
    )
    assert not problems, problems[:10]
    assert all(not c.is_alive() for c in clients)

    # Once the folder is still, the catalog is exactly the folder.
    def folder_equals_catalog() -> bool:
        health = server.json("/health")
        listed = {e["file"]: e.get("md5") for e in server.json("/v1/packages")}
        actual = {rel: md5((folder / rel).read_bytes()) for rel in churn.files()}
        return health["md5_pending"] == 0 and listed == actual

    assert wait_for(folder_equals_catalog, timeout=30), "the catalog does not match the folder"
    assert server.json("/v1/rejected") == []
    assert rss_end - rss_start < 100 * 1024, "RSS grew by more than 100 MiB"
    log = server.output()
    assert "Traceback" not in log and "internal error" not in log
