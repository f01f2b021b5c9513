"""openwrt/: the procd init script renders UCI into a config spklite accepts; DEPENDS lists what the pyz imports."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
import yaml
from conftest import Running
from test_pyz import BARE, catalog_packages, shared_pyz

OPENWRT = Path(__file__).resolve().parent.parent / "openwrt"
INIT = OPENWRT / "files" / "spklite.init"
UCI = OPENWRT / "files" / "spklite.config"

# Stand-ins for the OpenWrt shell helpers the init script uses (/lib/functions.sh, procd.sh):
# options come from UCI_<section>_<option> variables, procd calls and chown are recorded.
HARNESS = r"""
config_load() { [ "$1" = spklite ] || exit 91; }
config_get() { eval "_v=\${UCI_$2_$3:-\$4}"; eval "$1=\$_v"; }
config_get_bool() {
	eval "_v=\${UCI_$2_$3:-}"
	case "$_v" in 1|on|true|yes|enabled) _v=1 ;; 0|off|false|no|disabled) _v=0 ;; *) _v=$4 ;; esac
	eval "$1=\$_v"
}
procd_open_instance() { echo "open_instance" >> "$RECORD"; }
procd_set_param() { _p=$1; shift; printf '%s' "$_p" >> "$RECORD"; printf ' %s' "$@" >> "$RECORD"; echo >> "$RECORD"; }
procd_close_instance() { echo "close_instance" >> "$RECORD"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >> "$RECORD"; }
chown() { echo "chown $*" >> "$RECORD"; }
. "$INIT"
CONF_DIR="$WORK/var/etc/spklite"
CONF_FILE="$CONF_DIR/config.yml"
start_service
echo "rc=$?" >> "$RECORD"
"""


def shipped_options() -> Dict[str, str]:
    """The options of section 'main' in the shipped /etc/config/spklite."""
    options = {}
    for line in UCI.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 3 and words[0] == "option":
            options[words[1]] = words[2]
    return options


def start_service(tmp_path: Path, **overrides: str) -> List[str]:
    """Run the init script's start_service with the shipped UCI options (plus overrides); return the record."""
    options = {**shipped_options(), **overrides}
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "INIT": str(INIT), "WORK": str(tmp_path),
           "RECORD": str(tmp_path / "record")}
    env.update({f"UCI_main_{key}": value for key, value in options.items()})
    done = subprocess.run(["sh", "-c", HARNESS], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return (tmp_path / "record").read_text().splitlines()


def procd_params(record: List[str]) -> Dict[str, List[str]]:
    return {line.split()[0]: line.split()[1:] for line in record if line.split()}


def test_init_script_is_valid_shell() -> None:
    for script in (INIT, OPENWRT / "files" / "spklite.sh"):
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (Debian package: shellcheck)")
def test_init_script_passes_shellcheck() -> None:
    done = subprocess.run(["shellcheck", str(INIT), str(OPENWRT / "files" / "spklite.sh")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_start_renders_uci_into_a_config_spklite_accepts(tmp_path: Path) -> None:
    packages = tmp_path / 'usb disk/"odd" \\ name'  # quotes, backslash and space survive the YAML
    cache = tmp_path / "cache"
    record = start_service(tmp_path, packages=str(packages), cache=str(cache), hostname="router.lan:8080",
                           port="8089", threads="2", md5="0")
    assert "rc=0" in record
    rendered = tmp_path / "var" / "etc" / "spklite" / "config.yml"
    assert yaml.safe_load(rendered.read_text()) == {"spklite": {
        "host": "0.0.0.0", "port": 8089, "hostname": "router.lan:8080", "log-level": "info", "watch": "auto",
        "poll-interval": "10s", "md5": False, "filesystem": {"packages": str(packages), "cache": str(cache)},
        "server": {"threads": 2}}}
    assert cache.is_dir()
    assert f"chown spklite:spklite {cache}" in record

    # spklite itself reads it: the values arrive typed and validated.
    shown = subprocess.run([sys.executable, "-m", "spklite", "config", "--json", "-H", str(tmp_path / "home"),
                            "-C", str(rendered)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    effective = json.loads(shown.stdout)["spklite"]
    assert effective["port"] == 8089 and effective["md5"] is False
    assert effective["filesystem"]["packages"] == str(packages)
    assert effective["server"]["threads"] == 2


def test_procd_runs_the_wrapper_as_spklite_with_respawn(tmp_path: Path) -> None:
    record = start_service(tmp_path)
    conf_dir = tmp_path / "var" / "etc" / "spklite"
    assert record.index("open_instance") < record.index("close_instance")
    params = procd_params(record)
    assert params["command"] == ["/usr/bin/spklite", "serve", "--home", str(conf_dir),
                                 "--config", str(conf_dir / "config.yml"), "--cache", "/mnt/sda1/spklite/cache"]
    assert params["user"] == ["spklite"]
    assert params["respawn"] == ["3600", "5", "5"]
    assert params["file"] == ["/etc/config/spklite"]
    # The shipped defaults: cache on the USB disk next to the packages, not in RAM.
    assert yaml.safe_load((conf_dir / "config.yml").read_text())["spklite"]["filesystem"] == {
        "packages": "/mnt/sda1/spklite/packages", "cache": "/mnt/sda1/spklite/cache"}


def test_empty_cache_defaults_and_disabled_or_unconfigured_services(tmp_path: Path) -> None:
    record = start_service(tmp_path / "a", cache="")
    rendered = yaml.safe_load((tmp_path / "a" / "var" / "etc" / "spklite" / "config.yml").read_text())
    assert rendered["spklite"]["filesystem"]["cache"] == "/var/cache/spklite"
    assert "rc=0" in record

    assert start_service(tmp_path / "b", enabled="0") == ["rc=0"]  # disabled: no instance

    assert start_service(tmp_path / "c", packages="") == ["rc=1"]  # told what to set, no instance


@pytest.mark.skipif(not BARE, reason="no Python >= 3.9 without spklite's dependencies found")
def test_the_service_starts_from_compiled_modules_without_pyyaml(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """As procd runs it: the second start imports its modules from the cache, and its config without PyYAML
    (spklite keeps its parse in the one file of the root-owned config folder that the service may write)."""
    packages, cache = tmp_path / "packages", tmp_path / "cache"
    packages.mkdir()
    from spkbuilder import build_spk

    build_spk(packages / "demo.spk")
    record = start_service(tmp_path / "root", packages=str(packages), cache=str(cache))
    conf_dir = tmp_path / "root" / "var" / "etc" / "spklite"
    assert f"chown spklite:spklite {conf_dir / '.config.yml.json'}" in record
    command = procd_params(record)["command"]
    assert command[0] == "/usr/bin/spklite" and command[1] == "serve"
    launcher = [str(BARE[-1]), "-I", "-X", "importtime", str(shared_pyz(tmp_path_factory)), *command[1:]]
    imported = []
    for _ in range(2):
        server = Running(conf_dir, [], launcher=launcher, env={"PATH": os.environ.get("PATH", "")},
                         inherit_env=False)  # (its --home, --host 127.0.0.1 and --port come after the command's)
        try:
            assert catalog_packages(server.url) == ["demo"], server.output()
            assert server.stop() == 0
            imported.append(re.findall(r"^import time:.*\| ([\w.]+)$", server.output(), re.MULTILINE))
        finally:
            server.stop(signal.SIGKILL)
            server.log.close()
    assert "yaml" in imported[0] and "yaml" not in imported[1]
    assert [p.name for p in cache.glob("pyz-*")], "the pyz compiled its modules into the cache"


# DEPENDS ######################################################################################

# Which top-level modules each OpenWrt package carries that python3-light does not
# (openwrt/packages: lang/python/python3/files/python3-package-*.mk).
SPLIT_PACKAGES: Dict[str, Set[str]] = {
    "python3-asyncio": {"asyncio"},
    "python3-cgi": {"cgi", "cgitb"},
    "python3-codecs": {"unicodedata", "_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp",
                       "_codecs_kr", "_codecs_tw"},
    "python3-ctypes": {"ctypes", "_ctypes"},
    "python3-dbm": {"dbm", "_dbm", "_gdbm"},
    "python3-decimal": {"decimal", "_decimal"},
    "python3-email": {"email"},
    "python3-logging": {"logging"},
    "python3-lzma": {"lzma", "_lzma"},
    "python3-multiprocessing": {"multiprocessing", "_multiprocessing"},
    "python3-ncurses": {"curses", "_curses", "_curses_panel"},
    "python3-openssl": {"ssl", "_ssl", "_hashlib"},
    "python3-pydoc": {"pydoc", "pydoc_data"},
    "python3-readline": {"readline"},
    "python3-sqlite3": {"sqlite3", "_sqlite3"},
    "python3-unittest": {"unittest"},
    "python3-urllib": {"urllib"},
    "python3-uuid": {"uuid", "_uuid"},
    "python3-venv": {"venv", "ensurepip"},
    "python3-webbrowser": {"webbrowser"},
    "python3-xml": {"xml", "xmlrpc", "pyexpat", "_elementtree"},
}
# Imported inside try/except ImportError by the standard library, so not required:
# ssl/_hashlib (http.client, hashlib falls back to built-in md5) and lzma (shutil, tarfile).
OPTIONAL = {"python3-openssl", "python3-lzma"}


def declared_depends() -> Set[str]:
    text = (OPENWRT / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(r"^\s*DEPENDS:=(.*)$", text, re.MULTILINE)
    assert found
    return {word.lstrip("+") for word in found.group(1).split()}


def imported_modules(python: str, pyz: Path, tmp_path: Path) -> Set[str]:
    """Top-level modules a running server imports: serve, answer a catalog request, stop."""
    packages = tmp_path / "packages"
    packages.mkdir()
    from spkbuilder import build_spk

    build_spk(packages / "demo.spk")
    server = Running(tmp_path / "home", ["--packages", str(packages)],
                     launcher=[python, "-I", "-X", "importtime", str(pyz), "serve"],
                     env={"PATH": os.environ.get("PATH", "")}, inherit_env=False)
    try:
        assert catalog_packages(server.url) == ["demo"], server.output()
        assert server.stop() == 0
        log = server.output()
    finally:
        server.stop(signal.SIGKILL)
        server.log.close()
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", log, re.MULTILINE)
    assert names, log
    return {name.split(".")[0] for name in names}


def packages_for(modules: Set[str]) -> Set[str]:
    return {package for package, members in SPLIT_PACKAGES.items() if members & modules}


@pytest.mark.skipif(not BARE, reason="no Python >= 3.9 without spklite's dependencies found")
def test_depends_lists_exactly_the_python_packages_the_pyz_imports(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    python: Optional[str] = BARE[-1]  # the newest: OpenWrt ships a current Python
    needed = packages_for(imported_modules(str(python), shared_pyz(tmp_path_factory), tmp_path)) - OPTIONAL
    assert declared_depends() == {"python3-light"} | needed
