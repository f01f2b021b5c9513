"""A hostile packages folder (issue #15 items 10-13): random trees with a deep chain, symlink loops and
folder links, file symlinks into and out of the tree (some dangling), names with control characters or
bytes that are not UTF-8; then files changed under a running server the way tools do it (targets
replaced, same-size rebuilds with pinned times, symlinks made). Whatever the tree, a scan ends within
its deadline and sees every package file; the live index ends where a fresh scan stands."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import List

import pytest
from conftest import wait_for
from spkbuilder import build_spk

from spklite.index import Index, printable
from stress import sized

pytestmark = pytest.mark.stress

NAMES = ["p.spk", "sp ace.spk", "ünï.spk", "a\nb.spk", "a\rb.spk", "tab\t.spk", "esc\x1b[31m.spk"]
BYTE_NAMES = [b"caf\xe9.spk", b"\xff\xfe.spk"]  # not UTF-8: the index only (the catalog's links are not ours)


def chain(root: Path, depth: int) -> Path:
    folder = str(root)
    for _ in range(depth):
        folder = os.path.join(folder, "c")
        os.mkdir(folder)
    return Path(folder)


def remove_tree(root: Path) -> None:
    """Iterative and bottom-up: shutil.rmtree (and so pytest's cleanup) recurses once per level."""
    folders, pending = [], [str(root)]
    while pending:
        folder = pending.pop()
        folders.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            else:
                os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def same_size_version(rng: random.Random) -> str:
    return f"{rng.randint(1, 9)}.{rng.randint(0, 9)}-{rng.randint(1, 9)}"


def hostile_tree(rng: random.Random, packages: Path, outside: Path, byte_names: bool) -> List[Path]:
    """Build the tree; the real package files it holds (symlinks aside)."""
    folders = [packages, chain(packages, sized(1100, 1500))]  # os.walk recursed: ~1,000 at most
    for n in range(sized(40, 300)):
        folder = rng.choice(folders) / f"f{n}"
        folder.mkdir()
        folders.append(folder)
    outside_files = []
    for n in range(sized(10, 40)):
        outside_files.append(build_spk(outside / f"o{n}.spk", {"package": f"o{n}", "version": same_size_version(rng)}))
    files = []
    for n in range(sized(40, 300)):
        folder = rng.choice(folders)
        name = f"{n}-{rng.choice(NAMES)}"
        if byte_names and rng.random() < 0.2:
            path = os.path.join(bytes(folder), str(n).encode() + b"-" + rng.choice(BYTE_NAMES))
            built = build_spk(packages.parent / "staging.spk", {"package": f"p{n}"})
            os.rename(built, path)
            files.append(Path(os.fsdecode(path)))
        else:
            files.append(build_spk(folder / name, {"package": f"p{n}", "version": same_size_version(rng)}))
    for n in range(sized(15, 60)):  # folder links: loops, siblings, outside, dangling
        folder = rng.choice(folders)
        target = rng.choice([".", "..", str(rng.choice(folders)), str(outside), str(packages / "nowhere")])
        os.symlink(target, folder / f"l{n}")
    for n in range(sized(15, 60)):  # file links: into the tree, outside, dangling
        target = rng.choice([rng.choice(files), rng.choice(outside_files), outside / "gone.spk"])
        os.symlink(target, rng.choice(folders) / f"s{n}.spk")
    return files


@pytest.mark.parametrize("follow", [False, True])
def test_a_scan_of_a_hostile_tree_ends_and_sees_every_file(tmp_path, packages, figures, follow):
    rng = random.Random(1500 + follow)
    outside = tmp_path / "outside"
    outside.mkdir()
    files = hostile_tree(rng, packages, outside, byte_names=True)
    try:
        index = Index(str(packages), str(tmp_path / "cache"), follow_symlinks=follow)
        started = time.monotonic()
        state = index.scan()
        took = time.monotonic() - started
        assert took < 30
        seen = {os.stat(os.path.join(index.root, rel)).st_ino for rel in state.records}
        assert {os.stat(path).st_ino for path in files} <= seen
        assert index.save_snapshot()
        again = Index(str(packages), str(tmp_path / "cache"), follow_symlinks=follow)
        assert again.load_snapshot() and again.scan() == state._replace(version=again.current.version)
        figures(f"follow={follow}: {len(state.records)} records, {len(state.rejected)} rejected, "
                f"{len(index.links)} file links, scan {took * 1000:.0f} ms")
    finally:
        remove_tree(packages)


def test_the_live_index_ends_where_a_fresh_scan_stands(run_server, tmp_path, packages, figures):
    rng = random.Random(1513)
    outside = tmp_path / "outside"
    outside.mkdir()
    files = hostile_tree(rng, packages, outside, byte_names=False)
    try:
        server = run_server("--packages", str(packages), "--follow-symlinks", "--watch", "inotify")
        outside_files = sorted(outside.glob("o*.spk"))
        staging = tmp_path / "built.spk"
        changes = sized(40, 300)
        for n in range(changes):
            kind = rng.randrange(4)
            if kind == 0:  # a target replaced by a rename
                os.rename(build_spk(staging, {"package": "o", "version": same_size_version(rng)}),
                          rng.choice(outside_files))
            elif kind == 1:  # a same-size rebuild copied in place, times put back (cp -p)
                path = rng.choice([*files, *outside_files])
                data = build_spk(staging, {"package": "p", "version": same_size_version(rng)}).read_bytes()
                before = path.stat() if path.exists() else None  # a target deleted by an earlier step
                if before is not None and len(data) == before.st_size:
                    with open(path, "r+b") as fh:
                        fh.write(data)
                    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            elif kind == 2:  # a new symlink to a package
                os.symlink(rng.choice([*files, *outside_files]), packages / f"new{n}.spk")
            else:  # a target deleted, and made again later
                path = rng.choice(outside_files)
                if path.exists():
                    path.unlink()
                else:
                    build_spk(path, {"package": "o", "version": same_size_version(rng)})
            if rng.random() < 0.3:
                time.sleep(0.05)

        started = time.monotonic()
        fresh = Index(str(packages), str(tmp_path / "fresh-cache"), follow_symlinks=True)
        expected = {printable(rel): r.package.info["version"] for rel, r in fresh.scan().records.items()}  # as shown

        def served() -> dict:
            return {e["file"]: e["version"] for e in server.json("/v1/packages")}

        scanned = time.monotonic()
        assert wait_for(lambda: served() == expected, 20), (served(), expected)
        figures(f"{changes} changes over {len(files)} files, {len(fresh.links)} file links: a fresh scan "
                f"{scanned - started:.2f} s; the server agreed {time.monotonic() - started:.2f} s after the last")
        assert "Traceback" not in server.output()
    finally:
        remove_tree(packages)
