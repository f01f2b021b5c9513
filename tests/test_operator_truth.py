"""What the person running spklite is told (issue 11): a folder or file the server cannot read shows in the
log, /health, /v1/rejected and scan's exit status; scan fails loudly when it failed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest
from conftest import TESTS, WITHOUT_ROOT_POWERS, lock, unlock, wait_for
from spkbuilder import build_spk


def scan(home: Path, *flags: str, limited: bool = False) -> Tuple[int, str, str]:
    prefix: List[str] = WITHOUT_ROOT_POWERS if limited else []
    done = subprocess.run([*prefix, sys.executable, "-m", "spklite", "--home", str(home), *flags, "scan"],
                          capture_output=True, text=True, timeout=60, cwd=str(TESTS.parent))
    return done.returncode, done.stdout, done.stderr


def unreadable_tree(packages: Path) -> Tuple[Path, Path]:
    build_spk(packages / "ok.spk", {"package": "ok"})
    hidden = packages / "sub"
    hidden.mkdir()
    build_spk(hidden / "hidden.spk", {"package": "hidden"})
    locked = build_spk(packages / "locked.spk", {"package": "locked"})
    lock(hidden)
    lock(locked)
    return hidden, locked


def test_an_unreadable_folder_and_file_are_reported_not_hidden(packages: Path, run_limited: Callable[..., Any]):
    hidden, locked = unreadable_tree(packages)
    try:
        server = run_limited("--packages", str(packages))
        health = server.json("/health")
        assert health["status"] == "degraded" and health["folder_available"] is True
        assert {p["path"]: p["reason"] for p in health["problems"]} == {
            str(hidden): "cannot read folder: Permission denied",
            str(locked): "cannot read: Permission denied",
        }
        assert server.json("/v1/rejected") == [
            {"file": "sub/", "reason": "cannot read folder: Permission denied"},
            {"file": "locked.spk", "reason": "cannot read: Permission denied"},
        ]
        assert f"cannot read folder {hidden}: Permission denied" in server.output()
        unlock(hidden)
        unlock(locked)
        server.proc.send_signal(signal.SIGHUP)  # what an operator does after fixing permissions: a re-scan
        assert wait_for(lambda: server.json("/health")["status"] == "ok")
        assert server.json("/v1/rejected") == []
        assert sorted(p["package"] for p in server.json("/v1/packages")) == ["hidden", "locked", "ok"]
    finally:
        unlock(hidden)
        unlock(locked)


def test_an_unreadable_packages_folder_is_not_available(packages: Path, run_limited: Callable[..., Any]):
    build_spk(packages / "ok.spk", {"package": "ok"})
    lock(packages)
    try:
        server = run_limited("--packages", str(packages))
        health = server.json("/health")
        assert (health["status"], health["folder_available"], health["packages"]) == ("degraded", False, 0)
        assert server.json("/v1/rejected") == [{"file": "./", "reason": "cannot read folder: Permission denied"}]
    finally:
        unlock(packages)


def test_scan_exit_status_says_whether_it_saw_everything(tmp_path: Path, packages: Path):
    home = tmp_path / "home"
    build_spk(packages / "ok.spk", {"package": "ok"})
    (packages / "junk.spk").write_bytes(b"not a package")  # the folder's content: listed, not a failure
    status, out, _ = scan(home, "--packages", str(packages))
    assert status == 0 and out.startswith("1 packages, 1 rejected") and "error" not in out

    status, out, _ = scan(home, "--packages", str(tmp_path / "absent"))
    assert status == 1
    assert f"error: {tmp_path / 'absent'}: packages folder does not exist or is not a folder" in out

    (tmp_path / "a-file").write_text("")
    status, out, _ = scan(home, "--packages", str(packages), "--cache", str(tmp_path / "a-file" / "cache"))
    assert status == 1 and "error: snapshot not written: Not a directory" in out

    (packages / "more").mkdir()
    hidden, locked = unreadable_tree(packages / "more")
    try:
        status, out, _ = scan(home, "--packages", str(packages), limited=True)
        assert status == 1
        assert f"error: {hidden}: cannot read folder: Permission denied" in out.splitlines()
        assert f"error: {locked}: cannot read: Permission denied" in out.splitlines()
    finally:
        unlock(hidden)
        unlock(locked)
    assert os.access(hidden, os.R_OK)


def log_lines(server: Any, needle: str) -> List[str]:
    return [line for line in server.output().splitlines() if needle in line]


def test_start_up_says_what_it_uses_and_what_it_could_not(packages: Path, run_server: Callable[..., Any]):
    build_spk(packages / "ok.spk", {"package": "ok"})
    for n in range(7):
        (packages / f"junk{n}.spk").write_bytes(b"junk")
    server = run_server("--packages", str(packages))
    home = packages.parent / "home"
    assert log_lines(server, f"config file: {home / 'config.yml'}")
    assert log_lines(server, f"packages: {packages}, cache: {home / 'cache'}, watch: inotify")
    assert log_lines(server, "1 packages, 7 rejected (0 from snapshot, ")
    assert len(log_lines(server, "WARNING spklite: rejected junk")) == 5
    assert log_lines(server, "and 2 more rejected files: see /v1/rejected")


def test_the_log_tells_each_change_of_the_folder(packages: Path, run_server: Callable[..., Any], tmp_path: Path):
    build_spk(packages / "a.spk", {"package": "a", "version": "1.0-1"})
    server = run_server("--packages", str(packages))
    assert not log_lines(server, "added a.spk")  # start-up gives counts, not one line per file
    staging = tmp_path / "staging"
    staging.mkdir()
    build_spk(staging / "b.spk", {"package": "b", "version": "2.0-1"})
    os.rename(staging / "b.spk", packages / "b.spk")
    assert wait_for(lambda: log_lines(server, "INFO spklite.index: added b.spk: b 2.0-1"))
    build_spk(staging / "a.spk", {"package": "a", "version": "1.1-1"})
    os.rename(staging / "a.spk", packages / "a.spk")
    assert wait_for(lambda: log_lines(server, "INFO spklite.index: replaced a.spk: a 1.1-1"))
    (staging / "bad.spk").write_bytes(b"junk")
    os.rename(staging / "bad.spk", packages / "bad.spk")
    assert wait_for(lambda: log_lines(server, "WARNING spklite.index: rejected bad.spk: "))
    os.unlink(packages / "b.spk")
    assert wait_for(lambda: log_lines(server, "INFO spklite.index: removed b.spk"))


def test_access_lines_carry_size_time_agent_and_post_parameters(packages: Path, run_server: Callable[..., Any]):
    import urllib.request

    build_spk(packages / "a.spk", {"package": "a"})
    server = run_server("--packages", str(packages))
    agent = "Mozilla/5.0 (DS918+; DSM 7.2-64570)"
    server.get("/?arch=apollolake&build=64570&ds_sn=SECRET1", headers={"User-Agent": agent})
    form = b"arch=apollolake&build=5644&major=5&ds_sn=SECRET2"
    urllib.request.urlopen(urllib.request.Request(server.url + "/", data=form), timeout=10).read()
    server.get("/health")
    assert wait_for(lambda: log_lines(server, '"POST /?'))
    [get] = log_lines(server, '"GET /?arch')
    assert '"GET /?arch=apollolake&build=64570&ds_sn=***" 200 ' in get and get.endswith(f'ms "{agent}"')
    size = get.split('" 200 ')[1].split()[0]
    assert int(size) > 100
    [post] = log_lines(server, '"POST /?')
    assert '"POST /?arch=apollolake&build=5644&major=5&ds_sn=***" 200' in post
    assert "SECRET" not in server.output()
    assert not log_lines(server, '"GET /health')  # probes are not logged at the info level


def test_an_ipv6_listen_address_is_logged_as_a_usable_url(tmp_path: Path):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spklite", "--home", str(tmp_path / "home"), "--host", "::1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=str(TESTS.parent))
    try:
        assert wait_for(lambda: "serving on" in log.read_text(), timeout=20), log.read_text()
        assert f"serving on http://[::1]:{port}/" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_every_listening_address_is_logged():
    """A host name with several addresses (localhost: 127.0.0.1 and ::1 on many systems) makes waitress listen
    on each, with a server object of another kind: the log names them all (it crashed on effective_port)."""
    import waitress

    from spklite.server import listen_urls

    try:
        server = waitress.create_server(lambda environ, start: [], listen="127.0.0.1:0 [::1]:0")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        urls = listen_urls(server)
        assert len(urls) == 2 and urls[0].startswith("http://127.0.0.1:") and urls[1].startswith("http://[::1]:")
        assert all(url.rstrip("/").rsplit(":", 1)[1].isdigit() and not url.endswith(":0/") for url in urls)
    finally:
        server.close()
