"""The DSM 7 package of spklite itself (`make spk`): valid, served by spklite, and its start-stop-status works."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from conftest import free_port, wait_for
from spkbuilder import build_spk
from test_pyz import BARE, answers, catalog_packages, get_json, shared_pyz

from spklite import __version__

ROOT = Path(__file__).resolve().parent.parent
DSM7_VERSION = re.compile(r"^\d+(\.\d+){0,5}(-\d+)?$")
DSM6_CATALOG = "/?arch=apollolake&build=25556&major=6&minor=2&language=enu"


@pytest.fixture(scope="session")
def spk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spk-build")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_spk.py"),
                           "--pyz", str(shared_pyz(tmp_path_factory)), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out / f"spklite-{__version__}-1-noarch.spk"


def members(spk: Path) -> Dict[str, Tuple[int, bytes]]:
    """Member name -> (mode, content) of a tar (directories have empty content)."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(spk.read_bytes()), mode="r:") as tar:  # r: uncompressed only
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            found[member.name] = (member.mode, data)
    return found


def info_of(spk: Path) -> Dict[str, str]:
    text = members(spk)["INFO"][1].decode("utf-8")
    return dict(re.findall(r'^(\w+)="(.*)"$', text, re.MULTILINE))


def png_size(data: bytes) -> Tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# The file #####################################################################################

def test_spklite_check_accepts_it_without_warnings(spk: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spklite", "check", "--strict", str(spk)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower()


def test_info_declares_a_dsm7_noarch_package_needing_python(spk: Path) -> None:
    info = info_of(spk)
    assert info["package"] == "spklite"
    assert info["version"] == f"{__version__}-1" and DSM7_VERSION.match(info["version"])
    assert info["os_min_ver"] == "7.0-40000"
    assert info["arch"] == "noarch"
    assert info["install_dep_packages"] == "Python3.9"
    for key in ("displayname", "description", "maintainer", "adminport"):
        assert info[key]
    assert info["checksum"] == hashlib.md5(members(spk)["package.tgz"][1]).hexdigest()


def test_layout_icons_privilege_and_resources(spk: Path) -> None:
    spk_members = members(spk)
    assert png_size(spk_members["PACKAGE_ICON.PNG"][1]) == (64, 64)
    assert png_size(spk_members["PACKAGE_ICON_256.PNG"][1]) == (256, 256)
    for script in ("start-stop-status", "preinst", "postinst", "preuninst", "postuninst", "preupgrade",
                   "postupgrade"):
        assert spk_members[f"scripts/{script}"][0] & 0o111, script
    assert json.loads(spk_members["conf/privilege"][1])["defaults"]["run-as"] == "package"

    resource = json.loads(spk_members["conf/resource"][1])
    assert resource["data-share"]["shares"] == [{"name": "spklite", "permission": {"ro": ["spklite"]}}]
    with tarfile.open(fileobj=io.BytesIO(spk_members["package.tgz"][1]), mode="r:gz") as tgz:
        target = {m.name: tgz.extractfile(m).read() for m in tgz.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert target["spklite.pyz"].startswith(b"#!/usr/bin/env python3\n")
    port_file = target[resource["port-config"]["protocol-file"]].decode()
    assert f'dst.ports="{info_of(spk)["adminport"]}/tcp"' in port_file


# Served by spklite ############################################################################

def test_spklite_offers_itself_to_dsm7_and_not_to_dsm6(spk: Path, tmp_path: Path, run_server) -> None:
    folder = tmp_path / "packages"
    folder.mkdir()
    shutil.copy(spk, folder)
    server = run_server("--packages", str(folder))
    assert wait_for(lambda: server.json("/health")["packages"] == 1)
    assert catalog_packages(server.url) == ["spklite"]
    assert catalog_packages(server.url, DSM6_CATALOG) == []


# start-stop-status ############################################################################

@pytest.fixture
def installed(spk: Path, tmp_path: Path) -> Iterator[Tuple[Path, Dict[str, str]]]:
    """The package laid out as DSM 7 does (target, var, scripts, a shared folder) and the SYNOPKG_* it sets."""
    spk_members = members(spk)
    target, var, scripts, share, bin_dir = (tmp_path / n for n in ("target", "var", "scripts", "share", "bin"))
    for folder in (target, var, scripts, share, bin_dir):
        folder.mkdir()
    with tarfile.open(fileobj=io.BytesIO(spk_members["package.tgz"][1]), mode="r:gz") as tgz:
        for member in tgz.getmembers():
            (target / member.name).write_bytes(tgz.extractfile(member).read())  # type: ignore[union-attr]
    script = scripts / "start-stop-status"
    script.write_bytes(spk_members["scripts/start-stop-status"][1])
    script.chmod(0o755)
    build_spk(share / "demo.spk")
    # DSM's Python3.9 package stands in as the first python3 on PATH: a bare one when there is one.
    (bin_dir / "python3").symlink_to(BARE[0] if BARE else sys.executable)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SYNOPKG_PKGNAME": "spklite",
        "SYNOPKG_PKGVER": f"{__version__}-1",
        "SYNOPKG_PKGDEST": str(target),
        "SYNOPKG_PKGVAR": str(var),
        "SYNOPKG_PKGPORT": str(free_port()),
        "SYNOPKG_DSM_VERSION_MAJOR": "7",
        "SPKLITE_SHARE_DIR": str(share),  # stands for /var/packages/spklite/shares/spklite
        "SPKLITE_HOST": "127.0.0.1",  # tests listen on loopback only
    }
    yield script, env
    control(script, env, "stop")


def control(script: Path, env: Dict[str, str], action: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), action], env=env, capture_output=True, text=True, timeout=60)


def test_start_status_stop_status(installed: Tuple[Path, Dict[str, str]]) -> None:
    script, env = installed
    base = f"http://127.0.0.1:{env['SYNOPKG_PKGPORT']}"
    assert control(script, env, "status").returncode == 3

    started = control(script, env, "start")
    assert started.returncode == 0, started.stderr
    assert wait_for(lambda: answers(base + "/health"), timeout=30)
    assert catalog_packages(base) == ["demo"]
    assert get_json(base + "/health")["packages"] == 1
    assert control(script, env, "status").returncode == 0
    assert control(script, env, "start").returncode == 0  # already running: nothing to do

    log = Path(control(script, env, "log").stdout.strip())
    assert log.parent == Path(env["SYNOPKG_PKGVAR"]) and "serving on" in log.read_text()
    # The pyz compiled its modules once, into the package's cache: later starts import the bytecode.
    assert list((Path(env["SYNOPKG_PKGVAR"]) / "cache").glob("pyz-*/spklite/__pycache__/cli.*.pyc"))

    stopped = control(script, env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert control(script, env, "status").returncode == 3
    assert not answers(base + "/health")
    assert "stopped" in log.read_text()  # a clean SIGTERM shutdown, not a kill


def test_start_without_python_says_what_to_install(installed: Tuple[Path, Dict[str, str]], tmp_path: Path) -> None:
    script, env = installed
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("cat", "grep", "mkdir", "wc", "date", "tail", "mv", "rm", "sleep"):
        (tools / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    done = subprocess.run(["/bin/sh", str(script), "start"], env={**env, "PATH": str(tools)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Python3.9" in done.stderr
    assert control(script, env, "status").returncode == 3
