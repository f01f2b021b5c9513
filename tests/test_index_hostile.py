"""The index in a hostile folder (issue #15): deep chains, symlink loops, replaced link targets, in-place
rebuilds with pinned times, names that are not UTF-8 or hold control characters. Real servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
from conftest import TESTS, read_snapshot, settings, wait_for
from spkbuilder import build_broken, build_spk

from spklite.index import Index, open_index

DEPTH = 1000  # os.walk recursed once per level: RecursionError on Python < 3.12


def offered(server) -> dict:
    """{file: (version, md5)} of every indexed package file."""
    return {e["file"]: (e["version"], e.get("md5")) for e in server.json("/v1/packages")}


def versions(server) -> dict:
    return {name: version for name, (version, _) in offered(server).items()}


def download(server, name: str):
    try:
        status, _, body = server.get("/download/" + name)
        return status, body
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def scan(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`spklite scan`, its stdout encoded strictly (as under a UTF-8 locale)."""
    return subprocess.run(
        [sys.executable, "-m", "spklite", "--home", str(home), *args, "scan"],
        capture_output=True, cwd=str(TESTS.parent), timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )


def rebuilt_in_place(path: Path, data: bytes) -> None:
    """Overwrite a file in place and put its times back, as `cp -p` or `rsync -t --inplace` do."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def same_size_builds(staging: Path) -> tuple:
    old = build_spk(staging / "old.spk", {"package": "a", "version": "1.0-1"}).read_bytes()
    new = build_spk(staging / "new.spk", {"package": "a", "version": "1.0-2"}).read_bytes()
    assert len(old) == len(new) and old != new
    return old, new


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


# -- item 10: deep chains ---------------------------------------------------------------------------------------


@pytest.fixture
def chain(packages: Path):
    """packages/d/d/.../d, DEPTH folders deep; removed bottom-up after the test (shutil.rmtree recurses too)."""
    folders = [str(packages)]
    for _ in range(DEPTH):  # os.makedirs and Path.mkdir recurse
        folders.append(os.path.join(folders[-1], "d"))
        os.mkdir(folders[-1])
    yield Path(folders[-1])
    for folder in reversed(folders[1:]):
        for name in os.listdir(folder):
            if name != "d":
                os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def test_check_a_chain_of_a_thousand_folders(packages, chain):
    """`spklite check FOLDER` walks as the index does (os.walk recursed past Python's limit before 3.12)."""
    build_spk(chain / "deep.spk", {"package": "deep"})
    done = subprocess.run([sys.executable, "-m", "spklite", "check", str(packages)], capture_output=True,
                          timeout=120, cwd=str(TESTS.parent))
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()[-2000:]
    assert done.stdout.splitlines()[-1] == b"1 file: 0 rejected, 0 with warnings"


def test_a_chain_of_a_thousand_folders(run_server, tmp_path, packages, chain):
    bottom = chain
    build_spk(bottom / "deep.spk", {"package": "deep"})
    deep = "d/" * DEPTH + "deep.spk"

    done = scan(tmp_path / "home", "--packages", str(packages))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.startswith(b"1 packages, 0 rejected")

    server = run_server("--packages", str(packages), "--watch", "inotify")
    assert versions(server) == {deep: "1.0-1"}
    build_spk(bottom / "deeper.spk", {"package": "deeper"})  # the bottom folder is watched too
    assert wait_for(lambda: len(versions(server)) == 2, 10)


def test_an_unreadable_subfolder_is_skipped(run_server, packages):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    build_spk(packages / "a.spk", {"package": "a"})
    (packages / "locked").mkdir()
    build_spk(packages / "locked" / "b.spk", {"package": "b"})
    (packages / "locked").chmod(0)
    try:
        server = run_server("--packages", str(packages), "--watch", "inotify")
        assert versions(server) == {"a.spk": "1.0-1"}
    finally:
        (packages / "locked").chmod(0o755)


# -- item 11: symlink loops ---------------------------------------------------------------------------------------


def test_symlink_loops_with_follow_symlinks(run_server, packages):
    build_spk(packages / "p.spk", {"package": "p"})
    (packages / "sub").mkdir()
    build_spk(packages / "sub" / "c.spk", {"package": "c"})
    os.symlink(".", packages / "a")
    os.symlink(".", packages / "b")
    os.symlink("..", packages / "sub" / "up")
    server = run_server("--packages", str(packages), "--follow-symlinks", "--watch", "inotify")
    assert versions(server) == {"p.spk": "1.0-1", "sub/c.spk": "1.0-1"}  # each folder once
    build_spk(packages / "sub" / "d.spk", {"package": "d"})
    assert wait_for(lambda: "sub/d.spk" in versions(server), 10)


# -- item 12: symlinked packages whose target is replaced ----------------------------------------------------------


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_replaced_symlink_target_is_seen(run_server, tmp_path, packages, staging, where):
    """The link's folder is watched, the target's change happens elsewhere: both are seen."""
    if where == "outside":
        store = tmp_path / "elsewhere"
        flags = ["--follow-symlinks"]
    else:
        store = packages / "store"
        flags = []
    store.mkdir()
    target = store / "a-current.spk"
    build_spk(target, {"package": "a", "version": "1.0-1"})
    os.symlink(target, packages / "a.spk")
    server = run_server("--packages", str(packages), "--watch", "inotify", *flags)
    assert versions(server)["a.spk"] == "1.0-1"

    v2 = build_spk(staging / "v2.spk", {"package": "a", "version": "2.0-1"}).read_bytes()
    os.rename(staging / "v2.spk", target)  # replaced by a rename
    assert wait_for(lambda: versions(server)["a.spk"] == "2.0-1", 10)
    assert download(server, "a.spk") == (200, v2)

    v3 = build_spk(staging / "v3.spk", {"package": "a", "version": "3.0-1"}, screenshots=1).read_bytes()
    target.write_bytes(v3)  # rewritten in place
    assert wait_for(lambda: offered(server)["a.spk"] == ("3.0-1", md5(v3)), 10)
    assert download(server, "a.spk") == (200, v3)

    target.unlink()  # the link dangles: not offered
    assert wait_for(lambda: "a.spk" not in versions(server), 10)
    build_spk(target, {"package": "a", "version": "4.0-1"})  # and back
    assert wait_for(lambda: versions(server).get("a.spk") == "4.0-1", 10)


def test_links_made_while_running_are_seen(run_server, tmp_path, packages):
    """A symlink or a hard link is whole when made: inotify says CREATE, never CLOSE_WRITE."""
    build_spk(tmp_path / "b.spk", {"package": "b"})
    build_spk(tmp_path / "c.spk", {"package": "c"})
    server = run_server("--packages", str(packages), "--watch", "inotify", "--follow-symlinks")
    assert versions(server) == {}
    os.symlink(tmp_path / "b.spk", packages / "b.spk")
    os.link(tmp_path / "c.spk", packages / "c.spk")
    assert wait_for(lambda: versions(server) == {"b.spk": "1.0-1", "c.spk": "1.0-1"}, 10)


# -- item 13: same-size rebuilds with pinned times -----------------------------------------------------------------


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_a_same_size_rebuild_with_pinned_mtime(run_server, packages, staging, watch):
    old, new = same_size_builds(staging)
    (packages / "a.spk").write_bytes(old)
    server = run_server("--packages", str(packages), "--watch", watch, "--poll-interval", "0.2")
    assert wait_for(lambda: offered(server) == {"a.spk": ("1.0-1", md5(old))}, 10)
    rebuilt_in_place(packages / "a.spk", new)
    assert wait_for(lambda: offered(server) == {"a.spk": ("1.0-2", md5(new))}, 10)
    assert download(server, "a.spk") == (200, new)


def test_times_put_back_after_the_index_read_the_file(run_server, packages, staging):
    """`rsync -t --inplace` sets the times after closing: the index may read the file in between."""
    old, new = same_size_builds(staging)
    path = packages / "a.spk"
    path.write_bytes(old)
    before = path.stat()
    server = run_server("--packages", str(packages), "--watch", "inotify")
    path.write_bytes(new)
    assert wait_for(lambda: versions(server) == {"a.spk": "1.0-2"}, 10)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # a change of metadata only
    assert wait_for(lambda: download(server, "a.spk") == (200, new), 10)
    assert wait_for(lambda: offered(server) == {"a.spk": ("1.0-2", md5(new))}, 10)


def test_close_after_write_rereads_even_an_unchanged_signature(run_server, tmp_path, packages):
    """Where times are coarse (FAT) or ctime is not kept, a rewrite can leave the whole signature as it was:
    the snapshot here holds a stale version under the file's exact signature; closing the file re-reads it."""
    home = tmp_path / "home"
    build_spk(packages / "a.spk", {"package": "a", "version": "1.0-1"})
    index = open_index(settings(home, **{"filesystem.packages": str(packages)}))
    index.scan()
    index.save_snapshot()
    snapshot = Path(index.snapshot_path)
    header, *entries = snapshot.read_text().splitlines()
    header_data = json.loads(header)
    header_data["texts"] = ["0.9-1" if text == "1.0-1" else text for text in header_data["texts"]]
    snapshot.write_text("\n".join([json.dumps(header_data), *entries]) + "\n")

    server = run_server("--packages", str(packages), "--watch", "inotify", home=home)
    assert versions(server) == {"a.spk": "0.9-1"}  # the snapshot is trusted while the signature holds
    open(packages / "a.spk", "r+b").close()  # opened for writing, closed: IN_CLOSE_WRITE
    assert wait_for(lambda: versions(server) == {"a.spk": "1.0-1"}, 10)


def test_snapshots_of_the_previous_schema_are_rebuilt(packages, tmp_path, caplog):
    build_spk(packages / "a.spk", {"package": "a"})
    cache = tmp_path / "cache"
    first = Index(str(packages), str(cache))
    first.scan()
    first.save_snapshot()
    lines = (cache / "index.jsonl").read_text().splitlines()
    header = dict(json.loads(lines[0]), schema=2)
    old = [{k: v for k, v in json.loads(line).items() if k != "ctime_ns"} for line in lines[1:]]
    (cache / "index.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in [header, *old]))
    second = Index(str(packages), str(cache))
    assert not second.load_snapshot() and "schema 2" in caplog.text
    assert list(second.scan().records) == ["a.spk"] and second.stats["parsed"] == 1


# -- item 3: names that are not UTF-8, or hold control characters ---------------------------------------------------

NAMES = [b"caf\xe9.spk", b"a\nb.spk", b"a\rb.spk", b"tab\t\x1b[31m.spk"]


def place(staging: Path, folder: Path, name: bytes, **kwargs) -> None:
    built = build_spk(staging / "built.spk", **kwargs) if "info" in kwargs else build_broken(
        staging / "built.spk", "no_info")
    os.rename(bytes(built), os.path.join(bytes(folder), name))


def test_names_that_are_not_text(tmp_path, packages, staging):
    for n, name in enumerate(NAMES):
        place(staging, packages, name, info={"package": f"p{n}"})
    place(staging, packages, b"bad\xff\n.spk")
    cache = tmp_path / "cache"
    first = Index(str(packages), str(cache))
    state = first.scan()
    assert sorted(state.records) == sorted(os.fsdecode(name) for name in NAMES)
    assert list(state.rejected) == [os.fsdecode(b"bad\xff\n.spk")]
    first.fill_md5(first.pending_md5())
    assert all(record.md5 for record in first.current.records.values())
    assert first.save_snapshot()
    assert os.fsdecode(b"caf\xe9.spk") in read_snapshot(cache)["files"]

    second = Index(str(packages), str(cache))
    assert second.load_snapshot()
    assert second.scan() == first.current._replace(version=second.current.version)
    assert second.stats["parsed"] == 0


def test_scan_prints_every_name_on_one_line(tmp_path, packages, staging):
    place(staging, packages, b"caf\xe9.spk", info={"package": "cafe"})
    for name in (b"bad\xe9.spk", b"bad\nline.spk", b"bad\rline.spk"):
        place(staging, packages, name)
    done = scan(tmp_path / "home", "--packages", str(packages))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("1 packages, 3 rejected")
    rejected = sorted(line.split(": ")[1] for line in lines[1:])
    assert rejected == ["bad\\nline.spk", "bad\\rline.spk", "bad\\xe9.spk"]
    assert all(line.startswith("rejected: ") for line in lines[1:])


def test_the_watcher_takes_such_names(run_server, packages, staging):
    server = run_server("--packages", str(packages), "--watch", "inotify")
    for n, name in enumerate(NAMES):
        place(staging, packages, name, info={"package": f"p{n}"})
    assert wait_for(lambda: server.json("/health")["packages"] == len(NAMES), 10)
    os.unlink(os.path.join(bytes(packages), NAMES[0]))
    assert wait_for(lambda: server.json("/health")["packages"] == len(NAMES) - 1, 10)
    assert "Traceback" not in server.output()


def test_refresh_looks_again_at_one_file(packages, tmp_path, staging):
    """For the download route: the open file is not the recorded one, whatever no event said."""
    store = tmp_path / "elsewhere"
    store.mkdir()
    build_spk(store / "a.spk", {"package": "a", "version": "1.0-1"})
    os.symlink(store / "a.spk", packages / "a.spk")
    index = Index(str(packages), str(tmp_path / "cache"), follow_symlinks=True)
    old = index.scan().records["a.spk"]
    assert index.links == {"a.spk": str(store / "a.spk")}
    os.rename(build_spk(staging / "v2.spk", {"package": "a", "version": "2.0-1"}), store / "a.spk")
    assert index.current.records["a.spk"] == old  # no watcher: nothing told the index
    new = index.refresh("a.spk")
    assert new is not None and new.package.info["version"] == "2.0-1" and index.current.records["a.spk"] == new
    (store / "a.spk").unlink()
    assert index.refresh("a.spk") is None and "a.spk" not in index.current.records
    assert index.refresh("no/such.spk") is None
