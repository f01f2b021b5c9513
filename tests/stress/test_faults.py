"""Faults: kill -9 while the snapshot is written, an unwritable or full cache,
the packages folder vanishing and returning, unreadable package files."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
from conftest import TESTS, free_port, read_snapshot, wait_for
from spkbuilder import build_spk

from spklite.index import Index
from stress import sized

pytestmark = pytest.mark.stress

DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"


def fat(name: str) -> Dict[str, str]:
    """INFO of a package with its own long texts (~8 MiB of snapshot for 1,500 of them: equal texts are
    stored once)."""
    return {"package": name, "description": f"{name} " + "d" * 3000, "changelog": f"{name} " + "c" * 2000}


def folder_state(folder: Path) -> Dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*.spk")}


def served_state(server: Any) -> Dict[str, Optional[str]]:
    return {e["file"]: e.get("md5") for e in server.json("/v1/packages")}


def spawn(home: Path, *args: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "spklite",
        "--home",
        str(home),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        *args,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(TESTS.parent))


def test_kill_9_while_the_snapshot_is_written(
    tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]
):
    rng = random.Random(9)
    folder, home = tmp_path / "packages", tmp_path / "home"
    folder.mkdir()
    home.mkdir()
    cache = home / "cache"
    for n in range(1500):
        build_spk(folder / f"f{n}.spk", fat(f"f{n}"))
    trials, interrupted, serial = sized(10, 100), 0, 0
    for trial in range(trials):
        # A restart serves exactly the folder, whatever the last kill left behind.
        server = run_server("--packages", str(folder), home=home)
        assert wait_for(lambda s=server: s.json("/health")["md5_pending"] == 0, timeout=30)
        assert served_state(server) == folder_state(folder), f"trial {trial}: wrong catalog after restart"
        assert "ignoring snapshot" not in server.output(), server.output()
        assert [p.name for p in cache.glob(".tmp-*")] == [], "temp files left from an earlier kill"
        server.stop(signal.SIGKILL)

        # Change the folder, so the next start has a snapshot to write, then kill it.
        for _ in range(rng.randint(1, 40)):
            serial += 1
            victim = folder / f"f{rng.randrange(1500)}.spk"
            if rng.random() < 0.3 and victim.exists():
                victim.unlink()
            else:
                build_spk(victim, fat(f"v{serial}"))
        before = cache.joinpath("index.jsonl").stat().st_mtime_ns
        proc = spawn(home, "--packages", str(folder))
        if trial % 2:  # at a random moment of start-up
            time.sleep(rng.uniform(0.1, 2.5))
        else:  # at a random moment after the write began
            wait_for(
                lambda b=before: any(cache.glob(".tmp-*")) or cache.joinpath("index.jsonl").stat().st_mtime_ns != b,
                timeout=20,
                interval=0.001,
            )
            time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += any(cache.glob(".tmp-*"))
        read_snapshot(cache)  # never half-written
    final = run_server("--packages", str(folder), home=home)
    assert wait_for(lambda: final.json("/health")["md5_pending"] == 0, timeout=30)
    assert served_state(final) == folder_state(folder)
    figures(
        f"{trials} kill -9 trials, 1,500 files, {cache.joinpath('index.jsonl').stat().st_size >> 20} MiB "
        f"snapshot; {interrupted} kills interrupted a snapshot write; every restart served the folder"
    )


def tmpfs(path: Path, size: str) -> bool:
    """Mount a tiny tmpfs (root only); False where that is not possible."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_cache_folder_unwritable(tmp_path: Path, run_server: Callable[..., Any]):
    folder = tmp_path / "packages"
    folder.mkdir()
    build_spk(folder / "a.spk", {"package": "a"})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the cache's parent should be")
    server = run_server("--packages", str(folder), "--cache", str(blocker / "cache"))
    assert wait_for(lambda: "cache_error" in server.json("/health"))
    status, _, body = server.get(DSM7)
    assert status == 200 and [e["package"] for e in json.loads(body)["packages"]] == ["a"]
    build_spk(folder / "b.spk", {"package": "b"})  # still live
    assert wait_for(lambda: server.json("/health")["packages"] == 2)
    assert "not writable" in server.output() and "Traceback" not in server.output()


def test_cache_folder_full(tmp_path: Path, run_server: Callable[..., Any]):
    cache = tmp_path / "cache"
    if not tmpfs(cache, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root): the full-cache case is not run")
    try:
        folder = tmp_path / "packages"
        folder.mkdir()
        build_spk(folder / "a.spk", {"package": "a"})
        server = run_server("--packages", str(folder), "--cache", str(cache))
        assert wait_for(lambda: cache.joinpath("index.jsonl").exists())
        assert "cache_error" not in server.json("/health")
        # Packages whose icons and records outgrow 64 KiB.
        for n in range(40):
            build_spk(folder / f"big{n}.spk", fat(f"big{n}"), icon_256=True, screenshots=1)
        assert wait_for(lambda: server.json("/health")["packages"] == 41, timeout=20)
        assert wait_for(lambda: "cache_error" in server.json("/health"), timeout=20)
        health = server.json("/health")
        assert "No space left" in health["cache_error"], health
        status, _, body = server.get(DSM7)
        assert status == 200 and len(json.loads(body)["packages"]) == 41
        assert "not writable" in server.output() and "Traceback" not in server.output()
        assert server.stop() == 0  # the flush on exit fails quietly too
    finally:
        subprocess.run(["umount", str(cache)], check=False)


@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_packages_folder_vanishes_and_returns(tmp_path: Path, run_server: Callable[..., Any], watch: str):
    folder, away = tmp_path / "packages", tmp_path / "unplugged"
    folder.mkdir()
    for n in range(5):
        build_spk(folder / f"p{n}.spk", {"package": f"p{n}"})
    server = run_server("--packages", str(folder), "--watch", watch, "--poll-interval", "0.2")
    nas = lambda: json.loads(server.get(DSM7)[2])["packages"]  # noqa: E731
    assert len(nas()) == 5
    for _ in range(3):
        folder.rename(away)
        assert wait_for(lambda: not server.json("/health")["folder_available"], timeout=10)
        assert wait_for(lambda: nas() == [], timeout=10)
        away.rename(folder)
        assert wait_for(lambda: len(nas()) == 5, timeout=10)
    shutil.rmtree(folder)  # gone for good, then a new folder with other files
    folder.mkdir()
    build_spk(folder / "new.spk", {"package": "new"})
    assert wait_for(lambda: [e["package"] for e in nas()] == ["new"], timeout=10)
    assert server.proc.poll() is None and "Traceback" not in server.output()


def scan_as(uid: int, folder: Path, cache: Path) -> Dict[str, Any]:
    """Index `folder` in a forked child running as `uid` (the interpreter itself may not be
    executable by that user, so no new process is started); returns what it found."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, scan, report, leave without running pytest's cleanup
        try:
            os.setgid(uid)
            os.setuid(uid)
            state = Index(str(folder), str(cache)).scan()
            found = {"records": sorted(state.records), "rejected": {p: r.reason for p, r in state.rejected.items()}}
            os.write(write_end, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_unreadable_file_is_rejected_with_a_reason(tmp_path: Path):
    """As root chmod 000 stops nothing, so the index runs as `nobody` in a folder it may enter."""
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="spklite-perm-")) if as_root else tmp_path
    try:
        os.chmod(base, 0o755)
        folder = base / "packages"
        folder.mkdir()
        build_spk(folder / "ok.spk", {"package": "ok"})
        build_spk(folder / "locked.spk", {"package": "locked"})
        os.chmod(folder / "locked.spk", 0)
        found = scan_as(65534 if as_root else os.geteuid(), folder, base / "cache")
        assert found["records"] == ["ok.spk"]
        assert found["rejected"] == {"locked.spk": "cannot read: Permission denied"}
    finally:
        if as_root:
            shutil.rmtree(base)
