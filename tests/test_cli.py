"""spklite.cli: flags (gosspks' names too) before or after the command, the commands, exit codes, messages."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest
import yaml
from conftest import free_port
from spkbuilder import build_broken, build_spk

from spklite import __version__
from spklite.cli import main

Run = Callable[..., Tuple[int, str, str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Run:
    """run(*argv) -> (exit status, stdout, stderr) of main(), with a clean environment and HOME."""
    for name in list(os.environ):
        if name.startswith(("SPKLITE_", "GOSSPKS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home.parent))
    monkeypatch.chdir(home.parent)

    def run(*argv: str) -> Tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def effective(run: Run, *argv: str) -> Any:
    """The `spklite:` section printed by `config --json` with these flags."""
    status, out, err = run(*argv)
    assert status == 0, err
    return json.loads(out)["spklite"]


# Flags ######################################################################################################


def test_config_json_reflects_overrides(run: Run, home: Path) -> None:
    cfg = effective(
        run,
        "config",
        "--json",
        "--filesystem-cache=/srv/c",
        "--server-threads",
        "9",
        "-p",
        "8123",
        "--hostname",
        "nas.lan",
        "--keyring",
        "/k1.asc",
        "--keyring",
        "/k2.asc",
    )
    assert cfg["filesystem"]["cache"] == "/srv/c"
    assert cfg["server"]["threads"] == 9
    assert cfg["port"] == 8123
    assert cfg["hostname"] == "nas.lan"
    assert cfg["keyrings"] == ["/k1.asc", "/k2.asc"]
    assert cfg["filesystem"]["packages"] == str(home.parent / "spklite" / "packages")  # $HOME/spklite


def test_gosspks_flag_names(run: Run, home: Path, tmp_path: Path) -> None:
    cfg = effective(
        run,
        "-H",
        str(home),
        "--cache",
        "c",
        "--packages",
        "/srv/spk",
        "--download",
        "dl",
        "--static",
        "/img/",
        "-d",
        "-l",
        "Warn",
        "--scheme",
        "HTTPS",
        "config",
        "-j",
    )
    assert cfg["filesystem"]["cache"] == str(home.parent / "c")  # a flag's relative path: from the current folder
    assert cfg["filesystem"]["packages"] == "/srv/spk"
    assert (cfg["router"]["download"], cfg["router"]["static"], cfg["router"]["beta"]) == ("/dl", "/img", "/beta")
    assert cfg["debug-package"] is True
    assert cfg["log-level"] == "warning"
    assert cfg["scheme"] == "https"


def test_new_flag_aliases(run: Run) -> None:
    cfg = effective(
        run,
        "config",
        "--json",
        "--host",
        "127.0.0.1",
        "--watch",
        "poll",
        "--poll-interval",
        "1m",
        "--follow-symlinks",
        "--trusted-proxy",
        "10.0.0.1",
        "--threads",
        "2",
        "--max-request-body-size",
        "2M",
        "--defaults-maintainer",
        "Team",
    )
    assert (cfg["host"], cfg["watch"], cfg["poll-interval"], cfg["follow-symlinks"]) == (
        "127.0.0.1",
        "poll",
        "1m",
        True,
    )
    assert cfg["server"]["trusted-proxy"] == "10.0.0.1" and cfg["server"]["threads"] == 2
    assert cfg["server"]["max-request-body-size"] == "2MiB"
    assert cfg["defaults"]["maintainer"] == "Team"


@pytest.mark.parametrize(
    "argv",
    [
        ("-p", "9001", "config", "--json"),
        ("config", "--json", "-p", "9001"),
        ("--port=1", "config", "--port", "9001", "--json"),
    ],  # after the command wins
)
def test_flags_before_or_after_the_command(run: Run, argv: Tuple[str, ...]) -> None:
    assert effective(run, *argv)["port"] == 9001


def test_repeated_keyrings_before_and_after_the_command_add_up(run: Run) -> None:
    cfg = effective(run, "--keyring", "/a.asc", "config", "--json", "--keyring", "/b.asc")
    assert cfg["keyrings"] == ["/a.asc", "/b.asc"]


@pytest.mark.parametrize(
    "argv, md5",
    [
        ((), True),
        (("--no-md5",), False),
        (("--md5=false",), False),
        (("--md5=true",), True),
        (("--no-md5", "--md5"), True),
        (("--md5=0",), False),
    ],
)
def test_md5_switch_forms(run: Run, argv: Tuple[str, ...], md5: bool) -> None:
    assert effective(run, *argv, "config", "--json")["md5"] is md5


def test_debug_package_switch_forms(run: Run) -> None:
    assert effective(run, "-d=true", "config", "--json")["debug-package"] is True
    assert effective(run, "--debug-package=false", "config", "--json")["debug-package"] is False
    assert effective(run, "config", "--json", "--no-debug-package")["debug-package"] is False


def test_flags_beat_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPKLITE_PORT", "7001")
    monkeypatch.setenv("GOSSPKS_HOSTNAME", "env.lan")
    cfg = effective(run, "config", "--json")
    assert (cfg["port"], cfg["hostname"]) == (7001, "env.lan")
    assert effective(run, "config", "--json", "-p", "7002")["port"] == 7002


@pytest.mark.parametrize(
    "name",
    [
        "--packages-cache-count",
        "--packages-cache-duration",
        "--packages-cache-refresh",
        "--models-cache-duration",
        "--models-cache-refresh",
    ],
)
def test_gosspks_cache_flags_are_accepted_with_a_notice_and_ignored(run: Run, name: str) -> None:
    plain = effective(run, "config", "--json")
    status, out, err = run(name, "5m", "config", "--json", f"{name}=7")
    assert status == 0
    assert json.loads(out)["spklite"] == plain
    lines = err.strip().splitlines()
    assert lines == [f"spklite: {name} is ignored: the index is live (no cache TTL)"] * 2


def test_config_yaml_output_is_a_usable_config_file(run: Run, home: Path, tmp_path: Path) -> None:
    status, out, _ = run("config", "--port", "8765", "--static", "pics")
    assert status == 0
    assert yaml.safe_load(out)["spklite"]["router"]["static"] == "/pics"
    saved = tmp_path / "saved.yml"
    saved.write_text(out)
    assert effective(run, "-C", str(saved), "config", "--json")["port"] == 8765


def test_config_does_not_write_the_first_run_file(run: Run, home: Path) -> None:
    assert run("-H", str(home), "config")[0] == 0
    assert not (home / "config.yml").exists()


def test_a_gosspks_config_file_is_read(run: Run, home: Path) -> None:
    home.mkdir()
    (home / "gosspks.yml").write_text("gosspks:\n  port: 8181\n  md5: false\n  log-level: Error\n")
    cfg = effective(run, "-H", str(home), "config", "--json")
    assert (cfg["port"], cfg["md5"], cfg["log-level"]) == (8181, False, "error")


def test_unknown_config_keys_are_logged_not_fatal(run: Run, home: Path) -> None:
    home.mkdir()
    (home / "config.yml").write_text("spklite:\n  port: 8282\n  colour: blue\n")
    status, out, err = run("-H", str(home), "config", "--json")
    assert status == 0 and json.loads(out)["spklite"]["port"] == 8282
    assert "WARNING spklite.config:" in err and "unknown setting 'colour'" in err


# Errors: one line, exit 2, never a traceback ###############################################################


@pytest.mark.parametrize(
    "argv, key",
    [
        (("-p", "70000"), "port"),
        (("--port", "eighty"), "port"),
        (("--threads", "0"), "server.threads"),
        (("--connection-limit", "-1"), "server.connection-limit"),
        (("--channel-timeout", "soon"), "server.channel-timeout"),
        (("--poll-interval", "0s"), "poll-interval"),
        (("--max-request-body-size", "big"), "server.max-request-body-size"),
        (("--watch", "sometimes"), "watch"),
        (("-l", "loud"), "log-level"),
        (("--scheme", "gopher"), "scheme"),
        (("--md5=perhaps",), "md5"),
        (("--download", "/v1"), "router.download"),
        (("--static", "/"), "router.static"),
        (("--download", "a", "--static", "a"), "router.static"),
        (("--hostname", "https://nas.lan"), "hostname"),
        (("--trusted-proxy", "my proxy"), "server.trusted-proxy"),
        (("--trusted-proxy-headers", "x-real-ip"), "server.trusted-proxy-headers"),
        (("--packages", ""), "filesystem.packages"),
        (("-H", ""), "home"),
        (("--host", "256.1.1.1"), "host"),
        (("--host", "nas..lan"), "host"),
        (("--poll-interval", "999999999999d"), "poll-interval"),
        (("--poll-interval", "inf"), "poll-interval"),
        (("--channel-timeout", "99999999999999999999"), "server.channel-timeout"),
        (("--max-request-body-size", "9" * 400), "server.max-request-body-size"),
        (("--trusted-proxy", "*", "--trusted-proxy-headers", "forwarded x-forwarded-host"),
         "server.trusted-proxy-headers"),
    ],
)
def test_every_bad_value_is_one_clear_line(run: Run, argv: Tuple[str, ...], key: str) -> None:
    status, out, err = run(*argv, "config")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"spklite: {key}: '") and "is not allowed: " in err


def test_bytes_that_are_not_utf8_are_refused_before_the_first_run_file_is_written(run: Run, home: Path) -> None:
    """A flag's undecodable bytes (surrogates in Python) cannot be written as YAML: the first-run file would
    not read back, and the next start would fail."""
    status, _, err = run("-H", str(home), "scan", "--defaults-maintainer", "J\udcf6rg")
    assert status == 2 and err.startswith("spklite: defaults.maintainer: 'J\\udcf6rg' is not allowed")
    assert not (home / "config.yml").exists()
    assert run("-H", str(home), "config")[0] == 0


def test_a_bad_environment_value_says_where_it_came_from(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPKLITE_SERVER_CHANNEL_TIMEOUT", "forever")
    status, _, err = run("config")
    assert status == 2
    assert err.startswith("spklite: server.channel-timeout: 'forever' is not allowed: a duration")
    assert err.rstrip().endswith("(from environment SPKLITE_SERVER_CHANNEL_TIMEOUT)")


@pytest.mark.parametrize(
    "text, words",
    [("spklite:\n  port: [1\n", "invalid YAML at line"), ("spklite:\n  port: 0\n", "port: '0' is not allowed")],
)
def test_a_bad_config_file_is_one_clear_line(run: Run, home: Path, text: str, words: str) -> None:
    home.mkdir()
    (home / "config.yml").write_text(text)
    status, _, err = run("-H", str(home))
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert words in err and str(home / "config.yml") in err


def test_unknown_flags_and_commands_are_usage_errors(run: Run) -> None:
    status, _, err = run("config", "--pack=x")  # no abbreviations: --pack is not --packages
    assert status == 2 and "unrecognized arguments: --pack=x" in err
    status, _, err = run("frobnicate")
    assert status == 2 and "invalid choice" in err


def test_help_is_generated_from_the_schema(run: Run) -> None:
    status, out, _ = run("--help")
    assert status == 0
    flag_lines = [[w.rstrip(",") for w in line.split() if w.startswith("-")] for line in out.splitlines()]
    for names in (
        ["--filesystem-cache", "--cache"],
        ["-p", "--port"],
        ["--md5", "--no-md5"],
        ["-d", "--debug-package", "--no-debug-package"],
        ["--keyrings", "--keyring"],
        ["-H", "--home"],
        ["-C", "--config"],
        ["--server-threads", "--threads"],
    ):
        assert names in flag_lines  # "-p N, --port N" before Python 3.13, "-p, --port N" since
    for text in ("server tuning:", "port to listen on (default: 8080)", "SPKLITE_", "GOSSPKS_"):
        assert text in out


# Commands ###################################################################################################


@pytest.mark.parametrize("command", ["version", "v"])
def test_version(run: Run, command: str) -> None:
    assert run(command) == (0, f"spklite {__version__}\n", "")


def test_python_m_spklite_version(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "spklite", "version"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"spklite {__version__}\n", "")


def test_check_good_package(run: Run, tmp_path: Path) -> None:
    good = build_spk(tmp_path / "good.spk")
    assert run("check", str(good)) == (0, f"{good}: reaches DSM 7.0+ · every platform · stable\n{good}: OK\n", "")


@pytest.mark.parametrize("info, reach", [
    ({"arch": "x86_64"}, "DSM 7.0+ · x86_64 family · stable"),
    ({"arch": "apollolake geminilake", "os_min_ver": "7.2-64570"}, "DSM 7.2-64570+ · apollolake, geminilake · stable"),
    ({"arch": "armv7 armada38x", "os_min_ver": "6.1-15047", "beta": "yes"},
     "DSM 6.1–6.2 · armv7 family, armada38x · beta channel only"),
    ({"os_min_ver": None}, "DSM 6.2 and older · every platform · stable"),
    ({"arch": "x86_64", "exclude_arch": "braswell", "os_max_ver": "7.1-42661"},
     "DSM 7.0–7.1 · x86_64 family except braswell · stable"),
    ({"exclude_arch": "rtd1296", "model": "synology_apollolake_918+ synology_geminilake_920+"},
     "DSM 7.0+ · every platform except rtd1296 · only models synology_apollolake_918+, synology_geminilake_920+"
     " · stable"),
    ({"arch": "x86_64", "exclude_model": "synology_apollolake_918+"},
     "DSM 7.0+ · x86_64 family · not models synology_apollolake_918+ · stable"),
    ({"arch": "mycpu"}, "DSM 7.0+ · mycpu · stable"),  # a platform Synology does not list: a NAS may send it
    ({"os_max_ver": "6.2-23739"}, "no NAS"),
])
def test_check_says_which_nas_a_file_reaches(run: Run, tmp_path: Path, info: Any, reach: str) -> None:
    path = build_spk(tmp_path / "x.spk", info)
    status, out, _ = run("check", str(path))
    assert f"{path}: reaches {reach}\n" in out
    assert out.splitlines()[-1].startswith(f"{path}: OK")


@pytest.mark.parametrize("info, options, warning", [
    ({"os_min_ver": None, "firmware": "7.0-40000"}, {},
     "INFO: a DSM 7 file (firmware '7.0-40000') without os_min_ver, which DSM 7 requires"),
    ({"os_min_ver": "7.1-42661", "os_max_ver": "7.0-40000"}, {},
     "INFO: os_max_ver '7.0-40000' is below the minimum '7.1-42661': no NAS gets this file"),
    ({"os_min_ver": "6.2-23739", "version": "1.0b-1"}, {}, "INFO: version '1.0b-1' would be refused by DSM 7"),
    ({"qinst": "yes"}, {"install_wizard": True},
     "INFO: qinst=yes with an install wizard: Package Center may install it without showing the wizard"),
    ({"qinstall": "true"}, {"install_wizard": True},
     "INFO: qinstall=true with an install wizard: Package Center may install it without showing the wizard"),
])
def test_check_warns_about_files_that_reach_less_than_meant(run: Run, tmp_path: Path, info: Any, options: Any,
                                                            warning: str) -> None:
    path = build_spk(tmp_path / "x.spk", info, **options)
    status, out, _ = run("check", "--strict", str(path))
    assert f"{path}: warning: {warning}\n" in out
    assert status == 1


def test_check_does_not_warn_about_a_wizard_without_qinst(run: Run, tmp_path: Path) -> None:
    path = build_spk(tmp_path / "x.spk", {"qinst": "no"}, install_wizard=True)
    assert run("check", "--strict", str(path))[0] == 0


def test_check_rejects_broken_and_missing_files(run: Run, tmp_path: Path) -> None:
    good = build_spk(tmp_path / "good.spk")
    broken = build_broken(tmp_path / "broken.spk", "gzip")
    missing = tmp_path / "missing.spk"
    status, out, _ = run("check", str(good), str(broken), str(missing))
    assert status == 1
    lines = out.splitlines()
    assert lines[1] == f"{good}: OK"
    assert lines[2].startswith(f"{broken}: rejected: ") and "compressed" in lines[2]
    assert lines[3] == f"{missing}: rejected: no such file"
    assert lines[4] == "3 files: 2 rejected, 0 with warnings"
    assert len(lines) == 5  # a rejected file reaches no NAS: no "reaches" line


def test_check_warnings_fail_only_with_strict(run: Run, tmp_path: Path) -> None:
    plain = build_spk(tmp_path / "plain.spk", info={"description": None})
    status, out, _ = run("check", str(plain))
    assert status == 0
    assert f"{plain}: warning: " in out and "description" in out
    assert out.splitlines()[-1] == f"{plain}: OK, 1 warning"
    assert run("check", "--strict", str(plain))[0] == 1
    assert run("--log-level", "debug", "check", str(plain), "--strict")[0] == 1  # settings flags are fine here


def test_scan_writes_the_first_run_config_and_prints_a_summary(run: Run, home: Path) -> None:
    packages = home / "packages"
    packages.mkdir(parents=True)
    build_spk(packages / "demo.spk")
    status, out, err = run("-H", str(home), "scan")
    assert status == 0, err
    assert out.startswith("1 packages, 0 rejected")
    assert yaml.safe_load((home / "config.yml").read_text())["spklite"]["port"] == 8080


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_the_server_stack_is_imported_without_openssl() -> None:
    """bottle, waitress and the index load neither libssl nor libcrypto (~4.5 MiB); hashes stay right."""
    code = (
        "from spklite import cli; cli.without_openssl(); "
        "import bottle, waitress, hashlib, spklite.server; "
        "maps = open('/proc/self/maps').read(); "
        "import ssl; "  # still there for whoever needs it
        "print(hashlib.md5(b'spk').hexdigest(), hashlib.sha256(b'spk').hexdigest(), "
        "'libssl' in maps, 'libcrypto' in maps, hasattr(ssl, 'SSLContext'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    builtin_hashes = importlib.util.find_spec("_md5") is not None  # else (FIPS builds) hashlib keeps OpenSSL
    assert done.stdout.split() == [
        hashlib.md5(b"spk").hexdigest(), hashlib.sha256(b"spk").hexdigest(), "False", str(not builtin_hashes), "True"
    ]


# Hostile settings in a real process: one line on stderr, exit 2, no traceback, no memory blow-up ############


def alias_bomb() -> str:
    """A "billion laughs" config file: 9 aliases to 9 aliases ..., nine deep: 9**9 strings from ~400 bytes."""
    lines = ["spklite:", "  a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for before, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  {name}: &{name} [" + ",".join([f"*{before}"] * 9) + "]")
    return "\n".join(lines) + "\n  keyrings: *i\n"


def spklite_process(home: Path, *args: str, env: Dict[str, str] | None = None) -> Tuple[int, str, int]:
    """Run `python -m spklite --home HOME ARGS` (2 GiB of address space at most, 30 s at most):
    (exit status, stderr, peak RSS in KiB)."""
    home.mkdir(exist_ok=True)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SPKLITE_", "GOSSPKS_"))}
    with open(home.parent / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spklite", "--home", str(home), "--port", str(free_port()), *args],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**environ, **(env or {})},
            cwd=str(Path(__file__).parent.parent), preexec_fn=limit_memory,
        )
        deadline = time.monotonic() + 30
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"spklite {' '.join(args)} still running after 30 s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        stderr.seek(0)
        return proc.returncode, stderr.read(), usage.ru_maxrss


@pytest.mark.parametrize("command", ["serve", "config"])
def test_an_alias_bomb_config_is_one_line_without_a_memory_blow_up(home: Path, command: str) -> None:
    home.mkdir()
    (home / "config.yml").write_text(alias_bomb())
    status, err, peak_kib = spklite_process(home, command, "--host", "127.0.0.1")
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith(f"spklite: {home / 'config.yml'}: ") and "aliases" in err
    assert peak_kib < 100 << 10  # measured ~30 MiB; before, GiBs or a MemoryError
    assert not (home / ".config.yml.json").exists()


PROXY_MIX_FILE = (
    "spklite:\n  server:\n    trusted-proxy: 127.0.0.1\n    trusted-proxy-headers: [forwarded, x-forwarded-for]\n"
)


@pytest.mark.parametrize(
    "args, env, text, key",
    [
        (("--host", "256.1.1.1"), {}, "", "host"),
        ((), {"SPKLITE_HOST": "256.1.1.1"}, "", "host"),
        (("--host", "127.0.0.1", "--trusted-proxy", "*", "--trusted-proxy-headers", "forwarded x-forwarded-host"),
         {}, "", "server.trusted-proxy-headers"),
        (("--host", "127.0.0.1"), {}, PROXY_MIX_FILE, "server.trusted-proxy-headers"),
        (("--host", "127.0.0.1", "--watch", "poll", "--poll-interval", "999999999999d"), {}, "", "poll-interval"),
        (("--host", "127.0.0.1", "--watch", "poll"), {"GOSSPKS_POLL_INTERVAL": "99999999999d"}, "", "poll-interval"),
        (("--host", "127.0.0.1"), {}, "spklite:\n  watch: poll\n  poll-interval: 1.0e+16\n", "poll-interval"),
        (("--host", "127.0.0.1", "--max-request-header-size", "9" * 400), {}, "", "server.max-request-header-size"),
        (("--host", "127.0.0.1"), {}, 'spklite:\n  filesystem:\n    packages: "spk\\0"\n', "filesystem.packages"),
        (("--host", "127.0.0.1", "--keyring", "/dev/zero"), {}, "", "keyrings"),
        (("--host", "127.0.0.1", "-C", "/dev/zero"), {}, "", "config"),
    ],
    ids=["host-flag", "host-env", "proxy-mix-flags", "proxy-mix-file", "poll-flag", "poll-env", "poll-file",
         "header-size", "nul-path", "keyring-device", "config-device"],
)
def test_settings_that_crashed_the_server_stop_it_with_one_line(
    home: Path, args: Tuple[str, ...], env: Dict[str, str], text: str, key: str
) -> None:
    if text:
        home.mkdir()
        (home / "config.yml").write_text(text)
    status, err, _ = spklite_process(home, *args, env=env)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith(f"spklite: {key}: ")


def test_extreme_but_allowed_settings_serve(run_server: Any, packages: Path) -> None:
    build_spk(packages / "a.spk", {"package": "a", "maintainer": None})
    server = run_server(
        "--packages", str(packages), "--threads", "1", "--connection-limit", "3", "--watch", "poll",
        "--poll-interval", "1d", "--channel-timeout", "1d", "--max-request-body-size", "99999999999999999G",
        "--max-request-header-size", "1K", "--trusted-proxy", "*", "--trusted-proxy-count", "100",
        "--trusted-proxy-headers", "forwarded", "--defaults-maintainer", "Jörg 日本",
    )
    status, _, body = server.get("/?arch=apollolake&build=42661&major=7&minor=1&language=enu")
    assert status == 200 and json.loads(body)["packages"][0]["maintainer"] == "Jörg 日本"
    time.sleep(1.5)  # the poll thread has waited: no overflow
    assert server.stop() == 0 and "Traceback" not in server.output()
