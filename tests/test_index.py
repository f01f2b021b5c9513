"""The index and its snapshot (SPEC 3.3)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from conftest import read_snapshot
from spkbuilder import build_broken, build_spk

from spklite.index import SNAPSHOT_SCHEMA, Index, is_candidate_name


def make_index(packages: Path, cache: Path) -> Index:
    return Index(str(packages), str(cache))


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_names_that_are_ignored():
    assert is_candidate_name("a.spk") and is_candidate_name("A.SPK")
    for name in (".a.spk", "a.spk.part", "a.spk.tmp", "a.spk~", "a.txt", "a.spkx"):
        assert not is_candidate_name(name), name


def test_scan_records_and_rejections(packages, tmp_path):
    (packages / "deep" / "er").mkdir(parents=True)
    build_spk(packages / "deep" / "er" / "a.spk", {"package": "a"})
    build_broken(packages / "b.spk", "no_info")
    (packages / ".hidden").mkdir()
    build_spk(packages / ".hidden" / "c.spk", {"package": "c"})
    index = make_index(packages, tmp_path / "cache")
    state = index.scan()
    assert list(state.records) == ["deep/er/a.spk"]
    assert list(state.rejected) == ["b.spk"] and "INFO" in state.rejected["b.spk"].reason


def test_snapshot_round_trip_and_warm_start(packages, tmp_path):
    for n in range(5):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"}, icon_256=True, screenshots=1)
    build_broken(packages / "bad.spk", "random")
    first = make_index(packages, tmp_path / "cache")
    state = first.scan()
    first.fill_md5(first.pending_md5())
    assert first.save_snapshot()
    data = read_snapshot(tmp_path / "cache")
    assert data["header"]["schema"] == SNAPSHOT_SCHEMA and data["header"]["folder"] == str(packages)
    assert len(data["files"]) == 5
    assert "bad.spk" in data["rejected"]
    assert "package_icon" not in json.dumps(data)  # no base64 icons kept

    second = make_index(packages, tmp_path / "cache")
    assert second.load_snapshot()
    warm = second.scan()
    assert second.stats["parsed"] == 0 and second.stats["from_snapshot"] == 6
    assert warm.records == first.current.records and warm.rejected == state.rejected
    assert all(r.md5 for r in warm.records.values())

    build_spk(packages / "p0.spk", {"package": "p0", "version": "9-9"})
    (packages / "p1.spk").unlink()
    third = make_index(packages, tmp_path / "cache")
    third.load_snapshot()
    changed = third.scan()
    assert third.stats["parsed"] == 1
    assert "p1.spk" not in changed.records and changed.records["p0.spk"].package.info["version"] == "9-9"
    assert changed.records["p0.spk"].md5 is None


def test_corrupt_or_foreign_snapshots_are_rebuilt(packages, tmp_path, caplog):
    build_spk(packages / "a.spk", {"package": "a"})
    cache = tmp_path / "cache"
    cache.mkdir()
    snapshot = cache / "index.jsonl"
    header = {"schema": SNAPSHOT_SCHEMA, "folder": str(packages), "texts": ["a", "1.0-1"]}
    record = {"path": "a.spk", "size": 1, "mtime_ns": 1, "inode": 1, "ctime_ns": 1, "md5": None, "package": {
        "info": {"package": 0, "version": 1}, "icon": None, "icon_256": None, "screenshots": [],
        "has_license": False, "install_wizard": False, "upgrade_wizard": False, "warnings": []}}

    def lines(*entries):
        return "".join(json.dumps(entry) + "\n" for entry in entries).encode()

    snapshot.write_bytes(lines(header, record))  # whole: used (its a.spk is then parsed again: other stat)
    assert make_index(packages, cache).load_snapshot()
    for content in (
        b"{not json", b"[]", lines({"schema": 999}),
        lines(dict(header, schema=1), record),  # another spklite's
        lines(dict(header, folder="/elsewhere"), record),
        lines(header, dict(record, size="x")),
        lines(header, record)[:-20],  # cut short
        lines(dict(header, texts=["a"]), record),  # a text number out of range
        lines(dict(header, texts=["a", 1]), record),
        lines(header, dict(record, path=None)),
    ):
        snapshot.write_bytes(content)
        index = make_index(packages, cache)
        assert not index.load_snapshot()
        assert list(index.scan().records) == ["a.spk"] and index.stats["parsed"] == 1
    assert "ignoring snapshot" in caplog.text


def test_snapshot_write_is_atomic_and_throttled(packages, tmp_path):
    build_spk(packages / "a.spk", {"package": "a"})
    index = make_index(packages, tmp_path / "cache")
    index.scan()
    assert index.save_snapshot()
    assert not index.save_snapshot()  # nothing changed: no write
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_unwritable_cache_keeps_serving(packages, tmp_path):
    build_spk(packages / "a.spk", {"package": "a"})
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    index = make_index(packages, blocker / "cache")
    state = index.scan()
    assert list(state.records) == ["a.spk"]
    assert not index.save_snapshot()
    assert index.cache_error


def test_the_packages_folder_is_never_touched(packages, tmp_path):
    build_spk(packages / "a.spk", {"package": "a"})
    build_broken(packages / "b.spk", "gzip")
    (packages / "c.spk.part").write_bytes(b"partial")
    before = tree_digest(packages)
    index = make_index(packages, tmp_path / "cache")
    index.scan()
    index.fill_md5(index.pending_md5())
    index.save_snapshot()
    assert tree_digest(packages) == before
    assert sorted(os.listdir(packages)) == ["a.spk", "b.spk", "c.spk.part"]


def test_missing_folder_gives_an_empty_index(tmp_path):
    index = make_index(tmp_path / "nowhere", tmp_path / "cache")
    state = index.scan()
    assert not state.records and not state.rejected


def test_a_warm_start_shares_equal_info_texts(packages, tmp_path):
    """Every version and platform of a package repeats its texts: loaded once per distinct value."""
    for arch in ("x86_64", "armv8", "noarch"):
        (packages / arch).mkdir()
        build_spk(packages / arch / "p.spk", {"package": "p", "arch": arch, "description": "The same words."})
    first = make_index(packages, tmp_path / "cache")
    first.scan()
    first.save_snapshot()
    second = make_index(packages, tmp_path / "cache")
    assert second.load_snapshot() and second.scan().records == first.current.records
    infos = [r.package.info for r in second.current.records.values()]
    assert [info["arch"] for info in infos] == ["armv8", "noarch", "x86_64"]  # walked in name order
    assert infos[0]["description"] is infos[1]["description"] is infos[2]["description"]


def test_the_md5_thread_does_not_open_a_fifo(packages, tmp_path):
    path = build_spk(packages / "a.spk", {"package": "a"})
    index = make_index(packages, tmp_path / "cache")
    index.scan()
    path.unlink()
    os.mkfifo(path)
    worker = threading.Thread(target=index.fill_md5, args=(index.pending_md5(),), daemon=True)
    worker.start()
    worker.join(5)
    try:
        assert not worker.is_alive()  # before the fix: blocked in open() for good, no md5 ever again
    finally:
        with contextlib.suppress(OSError):  # a reader stuck in open() (a failed test) is let go; none: ENXIO
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert index.pending_md5()  # no md5 for what is not a regular file
