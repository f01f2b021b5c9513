"""Yank / unyank: the file stays on disk, a running server stops offering it on the next request, its older
version is offered instead, and a restart keeps it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, List

from spkbuilder import build_spk

NAS_7 = "/?arch=x86_64&build=42962&major=7&minor=2&unique=synology_x86_64_920%2B&package_update_channel=stable"


def offered(server: Any) -> List[str]:
    return sorted(f"{p['package']} {p['version']}" for p in server.json(NAS_7)["packages"])


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spklite", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=60)


def within(seconds: float, predicate: Callable[[], bool]) -> float:
    """How long predicate took to hold (fails past `seconds`)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < seconds, "not seen in time"
        time.sleep(0.02)
    return time.monotonic() - start


def test_yank_while_serving_then_restart(tmp_path: Path, run_server: Callable[..., Any]) -> None:
    home = tmp_path / "home"
    folder = home / "packages"
    (folder / "sub").mkdir(parents=True)
    build_spk(folder / "a1.spk", {"package": "a", "version": "1.0-1", "arch": "x86_64"})
    build_spk(folder / "sub" / "a2.spk", {"package": "a", "version": "2.0-1", "arch": "x86_64"})
    server = run_server()
    assert offered(server) == ["a 2.0-1"]

    done = cli(home, "yank", "sub/a2.spk")
    assert done.returncode == 0, done.stderr
    within(1.0, lambda: offered(server) == ["a 1.0-1"])  # the older version, not nothing
    assert (folder / "sub" / "a2.spk").is_file()  # on disk still
    listed = {p["file"]: p["yanked"] for p in server.json("/v1/packages")}
    assert listed == {"a1.spk": False, "sub/a2.spk": True}
    why = {d["file"]: d for d in server.json("/v1/explain?arch=x86_64&build=42962")["files"]}
    assert why["sub/a2.spk"]["rule"] == "yanked" and why["a1.spk"]["rule"] == "offered"
    page = server.get("/?view=files", {"Accept": "text/html"})[2].decode()
    assert page.count('<span class="badge">yanked</span>') == 1
    page = server.get("/", {"Accept": "text/html"})[2].decode()  # newest of each package: the not-yanked one
    assert 'data-version="1.0-1"' in page and 'data-version="2.0-1"' not in page
    page = server.get("/?platform=x86_64&dsm=7.2", {"Accept": "text/html"})[2].decode()
    assert "yanked by the operator" in page  # the left-out file, with its reason

    server.stop()
    server = run_server()
    assert offered(server) == ["a 1.0-1"]  # survives a restart

    done = cli(home, "unyank", str(folder / "sub" / "a2.spk"))  # a path works too
    assert done.returncode == 0, done.stderr
    within(1.0, lambda: offered(server) == ["a 2.0-1"])


def test_yank_refuses_unknown_and_outside_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "packages").mkdir(parents=True)
    outside = tmp_path / "x.spk"
    build_spk(outside, {"package": "x", "arch": "noarch"})
    for name in ("missing.spk", str(outside)):
        done = cli(home, "yank", name)
        assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.startswith("error:")
    assert not list((home / "packages").iterdir())  # nothing written in the packages folder


def prune_tree(home: Path) -> Path:
    """Three versions of `p` (x86_64) in the publish folder, one older outside it, one armv7 build, one yanked."""
    folder = home / "packages"
    published = folder / "published"
    published.mkdir(parents=True)
    for version in ("1.0-1", "2.0-1", "3.0-1"):
        build_spk(published / f"p_x86_64_{version}.spk", {"package": "p", "version": version, "arch": "x86_64"})
    build_spk(folder / "p_old.spk", {"package": "p", "version": "0.9-1", "arch": "x86_64"})  # by hand: never removed
    build_spk(published / "p_armv7_1.0-1.spk", {"package": "p", "version": "1.0-1", "arch": "armv7"})  # its own set
    build_spk(published / "p_x86_64_4.0-1.spk", {"package": "p", "version": "4.0-1", "arch": "x86_64"})
    return folder


def files_under(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.spk"))


def test_prune_lists_then_removes_only_in_the_publish_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = prune_tree(home)
    assert cli(home, "yank", "published/p_x86_64_4.0-1.spk").returncode == 0  # neither counted nor removed
    before = files_under(folder)

    for flags in ((), ("--dry-run",), ("--dry-run", "--yes")):
        done = cli(home, "prune", "--keep", "2", *flags)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "left alone (outside the publish folder): p_old.spk (p 0.9-1)",
            "would remove: published/p_x86_64_1.0-1.spk (p 1.0-1)",
        ]
        assert files_under(folder) == before

    done = cli(home, "prune", "--keep", "2", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed: published/p_x86_64_1.0-1.spk (p 1.0-1)" in done.stdout.splitlines()
    assert files_under(folder) == [f for f in before if f != "published/p_x86_64_1.0-1.spk"]

    done = cli(home, "prune", "--keep", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr and files_under(folder) != []
