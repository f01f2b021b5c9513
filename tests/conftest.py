"""Shared fixtures: settings on a temporary home, an index over a folder, the WSGI app,
and a real spklite process on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import webtest

from spklite import config
from spklite.app import make_app
from spklite.index import open_index

TESTS = Path(__file__).parent


def settings(home: Path, **flags: Any) -> Dict[str, Any]:
    """Settings as the command line would give them (keys are dotted paths)."""
    given = {"home": str(home)}
    given.update(flags)
    return config.load(given, environ={}, create_file=False)


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    folder = tmp_path / "packages"
    folder.mkdir()
    return folder


@pytest.fixture
def make_client(tmp_path: Path, packages: Path):
    """make_client(**flags) -> (webtest app, index) over the `packages` folder, freshly scanned."""

    def make(**flags: Any):
        flags.setdefault("filesystem.packages", str(packages))
        cfg = settings(tmp_path / "home", **flags)
        index = open_index(cfg)
        index.scan()
        index.fill_md5(index.pending_md5())
        keyrings = config.keyring_texts(cfg)
        return webtest.TestApp(make_app(cfg, index, keyrings)), index

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A real spklite process serving on 127.0.0.1 (`python -m spklite`, or the given launcher), started in
    `cwd` (default: the checkout)."""

    def __init__(self, home: Path, args: List[str], env: Optional[Dict[str, str]] = None,
                 launcher: Optional[List[str]] = None, inherit_env: bool = True, cwd: Optional[Path] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*(launcher or [sys.executable, "-m", "spklite"]), "--home", str(home), "--host", "127.0.0.1",
               "--port", str(self.port), *args]
        self.log = open(home.parent / f"spklite-{self.port}.log", "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**(os.environ if inherit_env else {}), **(env or {})},
                                     cwd=str(cwd or TESTS.parent))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spklite exited with {self.proc.returncode}:\n{self.output()}")
            try:
                self.get("/health")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"spklite did not start:\n{self.output()}")

    def get(self, path: str, headers: Optional[Dict[str, str]] = None):
        request = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[2])

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[Any]:
    started: List[Running] = []

    def run(*args: str, home: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
            launcher: Optional[List[str]] = None, cwd: Optional[Path] = None) -> Running:
        home = home or tmp_path / "home"
        home.mkdir(exist_ok=True)
        server = Running(home, list(args), env, launcher, cwd=cwd)
        started.append(server)
        return server

    yield run
    for server in started:
        server.stop(signal.SIGKILL)
        server.log.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value (or the last one)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value



def read_snapshot(cache: Path) -> Dict[str, Any]:
    """The snapshot in a cache folder as {"header": ..., "files": {path: entry}, "rejected": {path: entry}}.

    Every line must be whole JSON: a half-written snapshot fails here."""
    header, *entries = [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines()]
    return {
        "header": header,
        "files": {e["path"]: e for e in entries if "reason" not in e},
        "rejected": {e["path"]: e for e in entries if "reason" in e},
    }


# Root reads every file whatever its mode: a server meant to meet an unreadable folder runs without the two
# capabilities that let root past permissions, and the folder belongs to another user.
AS_ROOT = os.geteuid() == 0
WITHOUT_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []


def lock(path: Path) -> None:
    """Make `path` unreadable for a process started through WITHOUT_ROOT_POWERS (restored by `unlock`)."""
    if AS_ROOT:
        os.chown(path, 65534, 65534)
    path.chmod(0o700 if AS_ROOT else 0)


def unlock(path: Path) -> None:
    if AS_ROOT:
        os.chown(path, 0, 0)
    path.chmod(0o755)


@pytest.fixture
def run_limited(run_server: Callable[..., Running]) -> Callable[..., Running]:
    """Like run_server, for a server that must not read what `lock` locked (also as root)."""
    if AS_ROOT and not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to run a server without root's powers")
    return lambda *args, **options: run_server(*args, launcher=[*WITHOUT_ROOT_POWERS, sys.executable, "-m", "spklite"],
                                               **options)
