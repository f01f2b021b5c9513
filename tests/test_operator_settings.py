"""Settings as the person running spklite means them (issue 11): relative paths from where they were written, a
first-run file of defaults that says so in the log, --version, `check` on a folder, misspelt variables, a packages
"folder" that is a file, and logs without a second timestamp in the journal. Real processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
import yaml
from conftest import TESTS, free_port, read_snapshot
from spkbuilder import build_broken, build_spk

from spklite import __version__, config

TIMEOUT = 30  # seconds for any one command; a server that should have refused to start is killed then


def spklite(*args: str, cwd: Path | None = None, env: Dict[str, str] | None = None,
            stderr: Any = subprocess.PIPE) -> Tuple[int, str, str]:
    """Run `python -m spklite ARGS` to its end (bounded) and return (status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SPKLITE_", "GOSSPKS_", "JOURNAL_"))}
    environ["PYTHONPATH"] = str(TESTS.parent)  # this checkout's spklite, from any folder
    process = subprocess.Popen([sys.executable, "-m", "spklite", *args], cwd=str(cwd or TESTS.parent),
                               env={**environ, **(env or {})}, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"spklite {' '.join(args)} did not end within {TIMEOUT} s:\n{out}\n{err}")
    return process.returncode, out, err or ""


def effective(home: Path, *args: str, cwd: Path | None = None, env: Dict[str, str] | None = None) -> Any:
    status, out, err = spklite("config", "--json", "-H", str(home), *args, cwd=cwd, env=env)
    assert status == 0, err
    return json.loads(out)["spklite"]


# 1. Relative paths ###########################################################################################


def test_relative_flag_and_environment_paths_are_from_the_current_folder(tmp_path: Path, run_server: Any):
    site = tmp_path / "site"
    (site / "pk").mkdir(parents=True)
    build_spk(site / "pk" / "a.spk", {"package": "a"})
    server = run_server("--packages", "./pk", cwd=site, env={"SPKLITE_FILESYSTEM_CACHE": "c"})
    assert server.json("/health")["packages"] == 1
    assert f"packages: {site / 'pk'}, cache: {site / 'c'}, watch: " in server.output()
    assert server.stop() == 0
    assert list(read_snapshot(site / "c")["files"]) == ["a.spk"]
    assert not (tmp_path / "home" / "pk").exists() and not (tmp_path / "home" / "c").exists()


def test_relative_paths_in_a_config_file_are_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "models.yml").write_text("[]\n")
    conf = etc / "spklite.yml"
    conf.write_text("spklite:\n  filesystem:\n    packages: pk\n    cache: ../var/cache\n    models: models.yml\n"
                    "  keyrings: [keys/mine.asc]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load({"home": str(tmp_path / "home"), "config": str(conf)}, {}, create_file=False)
    assert cfg["filesystem.packages"] == str(etc / "pk")
    assert cfg["filesystem.cache"] == str(tmp_path / "var" / "cache")
    assert cfg["filesystem.models"] == str(etc / "models.yml")
    assert cfg["keyrings"] == [str(etc / "keys" / "mine.asc")]
    # the same words as flags or variables are from the current folder; the defaults stay in the home
    cfg = config.load({"home": str(tmp_path / "home"), "config": str(conf), "filesystem.packages": "pk",
                       "keyrings": ["mine.asc"]}, {"SPKLITE_FILESYSTEM_CACHE": "c"}, create_file=False)
    assert cfg["filesystem.packages"] == str(elsewhere / "pk")
    assert cfg["filesystem.cache"] == str(elsewhere / "c")
    assert cfg["keyrings"] == [str(elsewhere / "mine.asc")]
    cfg = config.load({"home": "home"}, {}, create_file=False)
    assert (cfg["filesystem.packages"], cfg["filesystem.cache"]) == (
        str(elsewhere / "home" / "packages"), str(elsewhere / "home" / "cache"))


def test_help_says_where_relative_paths_are_taken_from():
    status, out, _ = spklite("--help")
    assert status == 0
    assert ("Relative paths: in flags and the environment, from the current folder; in the config file, from the "
            "config file's folder.") in " ".join(out.split())


# 2. The first-run file holds the defaults ####################################################################


def test_first_run_writes_the_defaults_not_this_runs_flags_and_environment(tmp_path: Path, run_server: Any):
    packages = tmp_path / "packages"
    packages.mkdir()
    home = tmp_path / "home"
    server = run_server("--packages", str(packages), "--hostname", "once.example",
                        env={"SPKLITE_SERVER_THREADS": "3", "SPKLITE_DEFAULTS_MAINTAINER": "Just Once"})
    written = home / "config.yml"
    assert f"INFO spklite.config: wrote {written}" in server.output()  # the line reaches the log
    document = yaml.safe_load(written.read_text())["spklite"]
    assert document["port"] == 8080 and document["host"] == "0.0.0.0" and document["hostname"] == ""
    assert document["server"]["threads"] == 8 and document["defaults"]["maintainer"] == ""
    assert document["filesystem"] == {"packages": "packages", "cache": "cache", "models": ""}
    server.stop()
    # the next run, without those flags and variables, has the defaults again
    cfg = effective(home)
    assert (cfg["port"], cfg["hostname"], cfg["server"]["threads"]) == (8080, "", 8)
    assert cfg["filesystem"]["packages"] == str(home / "packages")


def test_the_first_run_file_documents_every_setting_and_reads_back_as_the_defaults(tmp_path: Path):
    home = tmp_path / "home"
    cfg = config.load({"home": str(home), "port": "9000"}, {"SPKLITE_HOSTNAME": "nas.lan"})
    config.write_first_run(cfg)
    text = (home / "config.yml").read_text()
    for setting in config.SCHEMA:
        if not setting.meta:
            assert f"({setting.flag}, {setting.env_names[0]})" in text
    assert config.load({"home": str(home)}, {}) == {"home": str(home), "config": str(home / "config.yml"),
                                                    **config.defaults(str(home))}


def test_a_first_run_file_elsewhere_names_the_default_folders_from_its_own_folder(tmp_path: Path):
    target = tmp_path / "etc" / "spklite.yml"
    target.parent.mkdir()
    home = tmp_path / "home"
    cfg = config.load({"home": str(home), "config": str(target)}, {})
    config.write_first_run(cfg)
    assert config.load({"home": str(home), "config": str(target)}, {})["filesystem.packages"] == str(
        home / "packages")


def test_scan_logs_the_first_run_file(tmp_path: Path):
    packages = tmp_path / "packages"
    packages.mkdir()
    status, _, err = spklite("scan", "-H", str(tmp_path / "home"), "--packages", str(packages))
    assert status == 0, err
    assert f"INFO spklite.config: wrote {tmp_path / 'home' / 'config.yml'}" in err


# --version ###################################################################################################


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flags(flag: str):
    assert spklite(flag) == (0, f"spklite {__version__}\n", "")


# check on a folder ###########################################################################################


def test_check_a_folder_checks_every_spk_under_it_sorted_with_a_summary(tmp_path: Path):
    tree = tmp_path / "dist"
    (tree / "sub" / "deeper").mkdir(parents=True)
    good = build_spk(tree / "a.spk", {"package": "a"})
    warned = build_spk(tree / "sub" / "b.spk", {"package": "b", "description": None})
    broken = build_broken(tree / "sub" / "deeper" / "c.spk", "gzip")
    (tree / ".hidden").mkdir()
    build_broken(tree / ".hidden" / "x.spk", "gzip")  # not served by the index: not checked either
    (tree / "notes.txt").write_text("not a package")
    status, out, err = spklite("check", str(tree))
    assert status == 1, err
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        str(good), str(good), *[str(warned)] * 3, str(broken)]
    assert f"{broken}: rejected: " in out and f"{warned}: OK, 1 warning" in out and f"{good}: OK" in out
    assert lines[-1] == "3 files: 1 rejected, 1 with warnings"

    broken.unlink()
    assert spklite("check", str(tree))[0] == 0
    status, out, _ = spklite("check", "--strict", str(tree))
    assert status == 1 and out.splitlines()[-1] == "2 files: 0 rejected, 1 with warnings"


def test_check_an_empty_folder_fails_with_one_line(tmp_path: Path):
    status, out, _ = spklite("check", str(tmp_path))
    assert status == 1
    assert out.splitlines() == [f"{tmp_path}: rejected: no .spk files in this folder",
                                "1 file: 1 rejected, 0 with warnings"]


# Misspelt variables ##########################################################################################


def test_misspelt_variables_are_named_with_the_setting_meant(tmp_path: Path):
    status, out, err = spklite("config", "--json", "-H", str(tmp_path / "home"), env={
        "SPKLITE_PROT": "9000", "SPKLITE_PACKAGES": "/srv/spk", "GOSSPKS_HOSTNAM": "nas.lan",
        "SPKLITE_ZZZZZZZZZZZZZZ": "1", "GOSSPKS_CACHE_PACKAGES_DURATION": "5m",
        "SPKLITE_PORT": "8181", "SPKLITE_SHARE_DIR": "/x", "SPKLITE_STRESS": "ci", "SPKLITE_TYPO_BUT_EMPTY": ""})
    assert status == 0 and json.loads(out)["spklite"]["port"] == 8181
    warnings = sorted(line.split(": ", 1)[1] for line in err.splitlines())
    assert warnings == [
        "environment 'GOSSPKS_CACHE_PACKAGES_DURATION' ignored: the index is live, CORS is always on",
        "environment 'GOSSPKS_HOSTNAM' ignored: no such setting (did you mean GOSSPKS_HOSTNAME?)",
        "environment 'SPKLITE_PACKAGES' ignored: no such setting (did you mean SPKLITE_FILESYSTEM_PACKAGES?)",
        "environment 'SPKLITE_PROT' ignored: no such setting (did you mean SPKLITE_PORT?)",
        "environment 'SPKLITE_ZZZZZZZZZZZZZZ' ignored: no such setting",
    ]
    assert all(line.startswith("WARNING spklite.config: ") or " WARNING spklite.config: " in line
               for line in err.splitlines())


# A packages "folder" that is a file ##########################################################################


@pytest.mark.parametrize("command", ["serve", "config", "scan"])
def test_a_packages_path_that_is_a_file_is_refused_in_one_line(tmp_path: Path, command: str):
    spk = build_spk(tmp_path / "a.spk")
    status, out, err = spklite(command, "-H", str(tmp_path / "home"), "--packages", str(spk),
                               "--host", "127.0.0.1", "--port", str(free_port()))
    assert (status, err) == (2, f"spklite: filesystem.packages: '{spk}' is not allowed: it is a file; "
                                "a folder of .spk files (from --filesystem-packages)\n")


def test_a_packages_folder_that_does_not_exist_yet_is_served_empty(tmp_path: Path, run_server: Any):
    later = tmp_path / "later"
    server = run_server("--packages", str(later))
    assert server.json("/v1/packages") == []
    assert f"packages folder {later} does not exist (yet)" in server.output()


# Journal-friendly logs #######################################################################################


def scan_log(tmp_path: Path, journal_stream: Callable[[os.stat_result], str]) -> List[str]:
    """The log lines of a first `scan`, its stderr a file, JOURNAL_STREAM set from that file's stat."""
    packages = tmp_path / "packages"
    packages.mkdir(exist_ok=True)
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        stream = journal_stream(os.fstat(stderr.fileno()))
        status, _, _ = spklite("scan", "-H", str(tmp_path / "home"), "--packages", str(packages),
                               env={"JOURNAL_STREAM": stream}, stderr=stderr)
    assert status == 0, log.read_text()
    return [line for line in log.read_text().splitlines() if "spklite.config: wrote" in line]


def test_no_second_timestamp_when_stderr_is_the_journal(tmp_path: Path):
    [line] = scan_log(tmp_path, lambda st: f"{st.st_dev}:{st.st_ino}")
    assert line.startswith("INFO spklite.config: wrote ")


def test_timestamps_stay_when_the_journal_variable_names_another_stream(tmp_path: Path):
    [line] = scan_log(tmp_path, lambda st: f"{st.st_dev}:{st.st_ino + 1}")  # inherited, stderr sent elsewhere
    assert line[:4].isdigit() and " INFO spklite.config: wrote " in line
