"""The single-file zipapp (SPEC 5): built here, run by interpreters that have none of spklite's dependencies."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import Running
from spkbuilder import build_spk

from spklite import __version__

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("bottle", "waitress", "yaml", "inotify_simple")
DSM7_CATALOG = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"


# Shared with test_openwrt and test_synology_spk ###############################################

def build_pyz(target: Path) -> Path:
    """Run the build script the way `make pyz` does."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_pyz.py"), "-o", str(target)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def shared_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's pyz, built on first use: every module that needs one shares it."""
    target = tmp_path_factory.getbasetemp() / "pyz-build" / "spklite.pyz"
    return target if target.exists() else build_pyz(target)


PROBE = ("import sys, importlib.util as u; print(sys.version_info[0], sys.version_info[1], "
         f"*[n for n in {DEPENDENCIES!r} if u.find_spec(n)])")


def bare_pythons() -> List[str]:
    """The oldest and the newest Python >= 3.9 on this machine without any of spklite's dependencies."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python3")))
    candidates += [p for p in (shutil.which("python3"), "/usr/bin/python3") if p and os.path.exists(p)]
    probes = {}
    for python in dict.fromkeys(candidates):  # all at once: each takes a moment to start
        try:
            probes[python] = subprocess.Popen([python, "-I", "-c", PROBE], stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True)
        except OSError:
            continue
    by_version = {}
    for python, process in probes.items():
        out = process.communicate(timeout=30)[0].split()
        if process.returncode == 0 and len(out) == 2:  # 2 = major and minor, no dependency importable
            version = (int(out[0]), int(out[1]))
            if version >= (3, 9):
                by_version.setdefault(version, python)
    if not by_version:
        return []
    versions = sorted(by_version)
    return [by_version[v] for v in sorted({versions[0], versions[-1]})]


def get(url: str, timeout: float = 10) -> Tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200
    return json.loads(body)


def answers(url: str) -> bool:
    try:
        return get(url, timeout=2)[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def catalog_packages(base: str, query: str = DSM7_CATALOG) -> List[str]:
    return [entry["package"] for entry in get_json(base + query)["packages"]]


# Fixtures #####################################################################################

BARE = bare_pythons()
needs_bare = pytest.mark.parametrize(
    "python", BARE or [pytest.param(None, marks=pytest.mark.skip(
        reason="no Python >= 3.9 without bottle/waitress/yaml/inotify_simple found (pyenv or /usr/bin)"))],
    ids=lambda p: os.path.basename(os.path.dirname(os.path.dirname(p))) if p else "none")


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_pyz(tmp_path_factory)


def run(python: str, pyz: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-I", str(pyz), *args], capture_output=True, text=True, timeout=60,
                          cwd=str(cwd), env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd)})


# The archive ##################################################################################

def test_two_builds_are_byte_identical(pyz: Path, tmp_path: Path) -> None:
    assert build_pyz(tmp_path / "again.pyz").read_bytes() == pyz.read_bytes()


def test_archive_is_sorted_dated_and_pure_python(pyz: Path) -> None:
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(pyz, os.X_OK)
    with zipfile.ZipFile(pyz) as archive:
        entries = archive.infolist()
    names = [e.filename for e in entries]
    assert names == sorted(names)
    assert {e.date_time for e in entries} == {(1980, 1, 1, 0, 0, 0)}
    assert {e.external_attr >> 16 for e in entries if not e.is_dir()} == {0o100644}
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so")) or n.startswith("_yaml/")]
    for module in ("__main__.py", "spklite/cli.py", "spklite/web/default-icon.png", "spklite/models.yml",
                   "bottle.py", "waitress/server.py", "yaml/__init__.py", "inotify_simple.py"):
        assert module in names
    licences = {n.split("/")[1] for n in names if n.startswith("licenses/") and not n.endswith("/")}
    assert licences == {"spklite", "bottle", "waitress", "PyYAML", "inotify-simple"}


# Running it with a bare interpreter ##########################################################

@needs_bare
def test_every_subcommand_runs_without_dependencies(python: str, pyz: Path, tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    build_spk(packages / "demo.spk")

    helped = run(python, pyz, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr

    version = run(python, pyz, "version", cwd=tmp_path)
    assert version.returncode == 0 and __version__ in version.stdout, version.stderr

    shown = run(python, pyz, "config", "--json", "-H", str(tmp_path / "home"), "--port", "8123", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["spklite"]["port"] == 8123

    checked = run(python, pyz, "check", str(packages / "demo.spk"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    scanned = run(python, pyz, "scan", "-H", str(tmp_path / "home"), "--packages", str(packages), cwd=tmp_path)
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert list((tmp_path / "home").rglob("index.jsonl")), "scan writes the index snapshot"


@needs_bare
def test_serves_a_catalog_and_stops_cleanly(python: str, pyz: Path, tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    build_spk(packages / "demo.spk")
    server = Running(tmp_path / "home", ["--packages", str(packages)], launcher=[python, "-I", str(pyz), "serve"],
                     env={"PATH": os.environ.get("PATH", "")}, inherit_env=False)
    try:
        health = server.json("/health")
        assert health["status"] == "ok" and health["packages"] == 1
        assert catalog_packages(server.url) == ["demo"]
        status, _, page = server.get("/", headers={"Accept": "text/html"})  # the template is read from the zip
        assert status == 200 and b"demo" in page
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
        server.log.close()


@needs_bare
def test_the_readme_example_serves_the_packages_folder_where_it_is_run(python: str, pyz: Path, tmp_path: Path) -> None:
    """README: `python3 spklite.pyz --packages ./packages`, run in the folder that holds `packages`, the pyz
    elsewhere: it serves that folder, and the first-run file in the home keeps the default."""
    site = tmp_path / "site"
    (site / "packages").mkdir(parents=True)
    build_spk(site / "packages" / "demo.spk")
    user = tmp_path / "user"
    user.mkdir()
    home = user / "spklite"  # the default home for this HOME, named as Running names every home
    server = Running(home, ["--packages", "./packages"], launcher=[python, "-I", str(pyz)], cwd=site,
                     env={"PATH": os.environ.get("PATH", ""), "HOME": str(user)}, inherit_env=False)
    try:
        assert catalog_packages(server.url) == ["demo"]
        assert f"packages: {site / 'packages'}, cache: {home / 'cache'}, watch: " in server.output()
        assert f"wrote {home / 'config.yml'}" in server.output()
        assert "packages: packages\n" in (home / "config.yml").read_text()  # <home>/packages: not ./packages
        assert server.stop() == 0
    finally:
        server.stop(signal.SIGKILL)
        server.log.close()


# Compiled once, into the cache ################################################################

def load_tool(name: str) -> Any:
    """A module of tools/ (not a package), imported by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extracted_folders(cache: Path) -> List[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def code_loaded_from(verbose_stderr: str) -> List[str]:
    """The compiled files `python -v` says it loaded code from."""
    return re.findall(r"^# code object from '?([^']+?)'?$", verbose_stderr, re.MULTILINE)


@needs_bare
def test_first_start_compiles_into_the_cache_and_later_starts_import_from_there(
        python: str, pyz: Path, tmp_path: Path) -> None:
    cache = tmp_path / "home" / "cache"
    first = run(python, pyz, "version", "-H", str(tmp_path / "home"), cwd=tmp_path)
    assert first.returncode == 0 and __version__ in first.stdout, first.stderr
    tag = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    [name] = extracted_folders(cache)
    assert re.fullmatch(rf"pyz-[0-9a-f]{{16}}-{tag}", name)
    folder = cache / name
    for module in ("bottle.py", "waitress/server.py", "yaml/__init__.py", "spklite/web/style.css"):
        assert (folder / module).is_file()
    for module in ("__init__", "cli", "config"):  # what `version` imports: compiled as imported
        assert (folder / "spklite" / "__pycache__" / f"{module}.{tag}.pyc").is_file(), module

    second = subprocess.run([python, "-I", "-v", str(pyz), "version", "-H", str(tmp_path / "home")],
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                            env={"PATH": os.environ.get("PATH", "")})
    assert second.returncode == 0 and __version__ in second.stdout, second.stderr
    loaded = code_loaded_from(second.stderr)
    assert str(folder / "spklite" / "__pycache__" / f"cli.{tag}.pyc") in loaded
    assert not [p for p in loaded if not p.startswith(str(folder)) and "spklite" in p], "all of spklite from there"
    assert extracted_folders(cache) == [name]


@needs_bare
def test_a_cache_that_cannot_be_written_still_runs_from_the_zip(python: str, pyz: Path, tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    done = run(python, pyz, "config", "--json", "--cache", str(in_the_way / "cache"), "-H", str(tmp_path / "h"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spklite"]["filesystem"]["cache"] == str(in_the_way / "cache")
    assert done.stderr == ""


@needs_bare
def test_concurrent_first_starts_share_one_complete_folder(python: str, pyz: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    argv = [python, "-I", str(pyz), "version", "-H", str(home)]
    starts = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
              for _ in range(4)]
    for process in starts:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0 and __version__ in out, err
    [name] = extracted_folders(home / "cache")  # no half-written folder left behind
    assert (home / "cache" / name / ".complete").read_text() == name


def test_a_rebuilt_pyz_with_other_content_does_not_use_the_old_folder(pyz: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT / "spklite", source / "spklite", ignore=shutil.ignore_patterns("__pycache__"))
    init = source / "spklite" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', '__version__ = "9.9.9"'))
    other = tmp_path / "other.pyz"
    load_tool("build_pyz").build(other, root=source)
    home = tmp_path / "home"
    python = BARE[-1] if BARE else sys.executable

    old = run(python, pyz, "version", "-H", str(home), cwd=tmp_path)
    assert __version__ in old.stdout, old.stderr
    [old_name] = extracted_folders(home / "cache")
    new = run(python, other, "version", "-H", str(home), cwd=tmp_path)
    assert "9.9.9" in new.stdout, new.stderr
    [new_name] = extracted_folders(home / "cache")  # the older archive's folder is gone
    assert new_name != old_name and "9.9.9" in (home / "cache" / new_name / "spklite" / "__init__.py").read_text()


@pytest.mark.parametrize("argv, environ", [
    ([], {}),
    (["serve", "-H", "h1"], {}),
    (["-Hh2", "scan"], {"SPKLITE_HOME": "ignored"}),
    (["--home=h3"], {"SPKLITE_FILESYSTEM_CACHE": "c0"}),
    (["--home", "h4", "serve", "--cache", "c1"], {}),
    (["--cache", "c1", "serve", "--filesystem-cache=~/c2"], {"GOSSPKS_FILESYSTEM_CACHE": "c3"}),
    (["serve"], {"SPKLITE_HOME": "", "GOSSPKS_HOME": "/srv/h5"}),
    (["serve"], {"SPKLITE_FILESYSTEM_CACHE": "c6", "GOSSPKS_FILESYSTEM_CACHE": "c7"}),
    (["serve", "--packages", "-H"], {}),
])
def test_the_pyz_finds_the_cache_folder_spklite_uses(argv: List[str], environ: Dict[str, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags and environment as config.load reads them (before spklite is imported, without a config file)."""
    from spklite import cli, config

    monkeypatch.chdir(tmp_path)
    environ = {"HOME": str(tmp_path / "user"), **environ}
    try:
        namespace = cli.build_parser().parse_args(argv)
    except SystemExit:
        namespace = None  # spklite refuses this command line: any folder will do
    found = load_tool("pyz_main").cache_folder(argv, environ)
    if namespace is not None:
        assert found == config.load(cli.given_flags(namespace), environ, create_file=False)["filesystem.cache"]
    else:  # still a folder to use: the pyz then runs, and spklite says what is wrong with the command line
        assert found == str(tmp_path / "user" / "spklite" / "cache")
