"""The live index: real inotify (and polling) on temporary folders, seen through HTTP (SPEC 3.3)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import webtest
from conftest import settings, wait_for
from spkbuilder import build_spk

from spklite import watch
from spklite.app import make_app
from spklite.index import open_index

DSM7 = "/?arch=apollolake&build=42661"


@pytest.fixture(params=["inotify", "poll"])
def live(request, tmp_path: Path, packages: Path):
    """(webtest app, packages folder, staging folder) with a running watcher."""
    cfg = settings(tmp_path / "home", **{"filesystem.packages": str(packages), "watch": request.param,
                                         "poll-interval": 0.2})
    index = open_index(cfg)
    watcher = watch.start(index, cfg["watch"], cfg["poll-interval"])
    index.scan()
    app = webtest.TestApp(make_app(cfg, index, watch_mode=lambda: watcher.mode))
    staging = tmp_path / "staging"
    staging.mkdir()
    yield app, packages, staging
    watcher.stop()


def offered(app) -> dict:
    return {e["package"]: e["version"] for e in app.get(DSM7).json["packages"]}


def shows(app, expected: dict, timeout: float = 5.0) -> bool:
    return wait_for(lambda: offered(app) == expected, timeout)


def test_mode_is_reported(live):
    app, _, _ = live
    assert app.get("/health").json["watch"] in ("inotify", "poll")


def test_copy_move_rename_overwrite_delete(live):
    app, packages, staging = live
    shutil.copy(build_spk(staging / "a.spk", {"package": "a"}), packages / "a.spk")
    assert shows(app, {"a": "1.0-1"})
    os.rename(build_spk(staging / "b.spk", {"package": "b"}), packages / "b.spk")
    assert shows(app, {"a": "1.0-1", "b": "1.0-1"})
    os.rename(packages / "b.spk", packages / "b-renamed.spk")
    assert shows(app, {"a": "1.0-1", "b": "1.0-1"})
    assert wait_for(lambda: [f["file"] for f in app.get("/v1/packages").json] == ["a.spk", "b-renamed.spk"])
    build_spk(packages / "a.spk", {"package": "a", "version": "2.0-1"})  # overwrite in place
    assert shows(app, {"a": "2.0-1", "b": "1.0-1"})
    os.rename(packages / "b-renamed.spk", staging / "b-out.spk")  # moved out
    assert shows(app, {"a": "2.0-1"})
    (packages / "a.spk").unlink()
    assert shows(app, {})


def test_new_subfolder_with_a_package(live):
    app, packages, staging = live
    (packages / "new").mkdir()
    time.sleep(0.1)
    build_spk(packages / "new" / "a.spk", {"package": "a"})
    assert shows(app, {"a": "1.0-1"})
    ready = staging / "ready"
    ready.mkdir()
    build_spk(ready / "b.spk", {"package": "b"})
    os.rename(ready, packages / "ready")  # a whole folder moved in
    assert shows(app, {"a": "1.0-1", "b": "1.0-1"})
    shutil.rmtree(packages / "new")
    assert shows(app, {"b": "1.0-1"})
    os.rename(packages / "ready", staging / "gone")  # a whole folder moved out
    assert shows(app, {})


def test_half_written_file_is_never_listed(live):
    app, packages, staging = live
    data = build_spk(staging / "a.spk", {"package": "a"}, package_tgz=os.urandom(200_000)).read_bytes()
    with open(packages / "a.spk", "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert offered(app) == {}
            time.sleep(0.05)
        fh.write(data[len(data) // 2:])
    assert shows(app, {"a": "1.0-1"})
    assert app.get("/download/a.spk").body == data


def test_folder_removed_and_recreated(live):
    app, packages, staging = live
    build_spk(packages / "a.spk", {"package": "a"})
    assert shows(app, {"a": "1.0-1"})
    os.rename(packages, staging / "unplugged")
    assert shows(app, {}, timeout=10)
    health = app.get("/health").json  # still serving, and saying why the catalog is empty
    assert (health["status"], health["folder_available"]) == ("degraded", False)
    assert health["problems"] == [{"path": str(packages),
                                   "reason": "packages folder does not exist or is not a folder"}]
    os.rename(staging / "unplugged", packages)  # plugged in again
    assert shows(app, {"a": "1.0-1"}, timeout=10)
    assert app.get("/health").json["status"] == "ok"
    build_spk(packages / "b.spk", {"package": "b"})  # and watched again
    assert shows(app, {"a": "1.0-1", "b": "1.0-1"}, timeout=10)


def test_temporary_names_are_ignored_until_renamed(live):
    app, packages, _ = live
    build_spk(packages / "a.spk.part", {"package": "a"})
    build_spk(packages / ".b.spk", {"package": "b"})
    time.sleep(0.5)
    assert offered(app) == {}
    os.rename(packages / "a.spk.part", packages / "a.spk")
    assert shows(app, {"a": "1.0-1"})


def test_off_mode_indexes_at_start_only(tmp_path, packages):
    cfg = settings(tmp_path / "home", **{"filesystem.packages": str(packages), "watch": "off"})
    index = open_index(cfg)
    watcher = watch.start(index, "off", 1.0)
    build_spk(packages / "a.spk", {"package": "a"})
    index.scan()
    app = webtest.TestApp(make_app(cfg, index, watch_mode=lambda: watcher.mode))
    build_spk(packages / "b.spk", {"package": "b"})
    time.sleep(0.3)
    assert offered(app) == {"a": "1.0-1"} and app.get("/health").json["watch"] == "off"


def test_network_mounts_are_polled(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nnas:/volume1 /mnt/nas nfs4 rw 0 0\n"
                      "//nas/share /mnt/my\\040share cifs rw 0 0\n")
    assert watch.filesystem_type("/mnt/nas/packages", str(mounts)) == "nfs4"
    assert watch.filesystem_type("/mnt/my share/x", str(mounts)) == "cifs"
    assert watch.filesystem_type("/srv/packages", str(mounts)) == "ext4"
    assert watch.filesystem_type("/mnt/nasty", str(mounts)) == "ext4"
