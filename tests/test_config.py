"""spklite.config: the schema, the sources and their order, parsing, the first-run file, gosspks' files."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml

from spklite import config
from spklite.config import ConfigError, load

KEY = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mQENBFake0BCADtest
=abcd
-----END PGP PUBLIC KEY BLOCK-----"""

# gosspks' own `config --yaml` output (its README), plus a `gpg` key list as cfg.GetGPGKeys() read it.
GOSSPKS_YML = """\
gosspks:
  cache:
    models:
      duration: 7d
      refresh: 1d
    packages:
      count: 15
      duration: 5m
      refresh: 1m
  debug-package: false
  filesystem:
    cache: cache
    models: models.yml
    packages: packages
  hostname: "nas.example.com"
  log-level: Error
  md5: false
  port: 8080
  router:
    download: /download
    static: /static
  scheme: http
  gpg:
    - |
      -----BEGIN PGP PUBLIC KEY BLOCK-----

      mQENBFake0BCADtest
      =abcd
      -----END PGP PUBLIC KEY BLOCK-----
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def load_in(
    home: Path, flags: Dict[str, Any] | None = None, environ: Dict[str, str] | None = None, **kwargs: Any
) -> Dict[str, Any]:
    return load({"home": str(home), **(flags or {})}, environ or {}, **kwargs)


def write_config(home: Path, text: str, name: str = "config.yml") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / name
    path.write_text(text)
    return path


def error_of(home: Path, flags: Dict[str, Any] | None = None, environ: Dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_in(home, flags, environ, create_file=False)
    message = str(caught.value)
    assert "\n" not in message
    return message


# Defaults ###################################################################################################


def test_defaults_fill_every_key(home: Path) -> None:
    cfg = load_in(home, create_file=False)
    assert set(cfg) == {s.key for s in config.SCHEMA}
    assert cfg["port"] == 8080  # gosspks' port
    assert cfg["host"] == "0.0.0.0"
    assert cfg["home"] == str(home)
    assert cfg["config"] == str(home / "config.yml")
    assert cfg["filesystem.packages"] == str(home / "packages")
    assert cfg["filesystem.cache"] == str(home / "cache")
    assert cfg["filesystem.models"] == ""
    assert cfg["router.download"] == "/download" and cfg["router.static"] == "/static"
    assert cfg["md5"] is True and cfg["debug-package"] is False and cfg["follow-symlinks"] is False
    assert cfg["watch"] == "auto" and cfg["poll-interval"] == 2.0
    assert cfg["server.threads"] == 8 and cfg["server.connection-limit"] == 500
    assert cfg["server.channel-timeout"] == 120.0
    assert cfg["server.max-request-body-size"] == 1 << 20
    assert cfg["server.max-request-header-size"] == 64 << 10
    assert cfg["server.trusted-proxy"] == "" and cfg["server.trusted-proxy-count"] == 1
    assert cfg["server.trusted-proxy-headers"] == [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
    ]
    assert cfg["keyrings"] == []
    assert cfg["defaults.maintainer"] == "" and cfg["defaults.support-url"] == ""
    assert not home.exists()  # create_file=False touches nothing


def test_default_home_is_spklite_in_the_user_home(tmp_path: Path) -> None:
    cfg = load({}, {"HOME": str(tmp_path)}, create_file=False)
    assert cfg["home"] == str(tmp_path / "spklite")
    assert cfg["filesystem.packages"] == str(tmp_path / "spklite" / "packages")


def test_home_and_config_from_the_environment(tmp_path: Path) -> None:
    other = write_config(tmp_path / "etc", "spklite:\n  port: 7000\n", "spklite.yml")
    cfg = load({}, {"SPKLITE_HOME": str(tmp_path / "h"), "SPKLITE_CONFIG": str(other)}, create_file=False)
    assert cfg["home"] == str(tmp_path / "h")
    assert cfg["config"] == str(other)
    assert cfg["port"] == 7000


# Sources and their order ####################################################################################

FILE = "spklite:\n  port: 1001\n  filesystem:\n    cache: from-file\n  server:\n    threads: 11\n"
ENV = {"SPKLITE_PORT": "1002", "SPKLITE_FILESYSTEM_CACHE": "/from-env", "SPKLITE_SERVER_THREADS": "12"}
FLAGS = {"port": "1003", "filesystem.cache": "/from-flag", "server.threads": "13"}


@pytest.mark.parametrize(
    "use_file, use_env, use_flags, expected",
    [
        (False, False, False, (8080, "<home>/cache", 8)),
        (True, False, False, (1001, "<home>/from-file", 11)),
        (True, True, False, (1002, "/from-env", 12)),
        (False, True, False, (1002, "/from-env", 12)),
        (True, True, True, (1003, "/from-flag", 13)),
        (True, False, True, (1003, "/from-flag", 13)),
    ],
)
def test_flags_beat_environment_beat_file_beat_defaults(
    home: Path, use_file: bool, use_env: bool, use_flags: bool, expected: tuple
) -> None:
    if use_file:
        write_config(home, FILE)
    cfg = load_in(home, FLAGS if use_flags else {}, ENV if use_env else {}, create_file=False)
    port, cache, threads = expected
    assert (cfg["port"], cfg["filesystem.cache"], cfg["server.threads"]) == (
        port,
        cache.replace("<home>", str(home)),
        threads,
    )


def test_gosspks_environment_names_work_and_spklite_names_win(home: Path) -> None:
    environ = {
        "GOSSPKS_HOSTNAME": "old.example.com",
        "GOSSPKS_LOG_LEVEL": "Warn",
        "GOSSPKS_ROUTER_STATIC": "img",
        "GOSSPKS_PORT": "5000",
        "SPKLITE_PORT": "6000",
        "GOSSPKS_DEBUG_PACKAGE": "true",
    }
    cfg = load_in(home, environ=environ, create_file=False)
    assert cfg["hostname"] == "old.example.com"
    assert cfg["log-level"] == "warning"
    assert cfg["router.static"] == "/img"
    assert cfg["port"] == 6000
    assert cfg["debug-package"] is True


def test_an_empty_environment_variable_counts_as_unset(home: Path) -> None:
    write_config(home, "spklite:\n  hostname: from-file\n")
    cfg = load_in(home, environ={"SPKLITE_HOSTNAME": "", "SPKLITE_PORT": ""}, create_file=False)
    assert cfg["hostname"] == "from-file" and cfg["port"] == 8080


def test_a_flag_given_as_none_is_not_given(home: Path) -> None:
    cfg = load_in(home, {"port": None}, {"SPKLITE_PORT": "4444"}, create_file=False)
    assert cfg["port"] == 4444


# Config files ###############################################################################################


def test_a_gosspks_config_is_read_as_it_is(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_config(home, GOSSPKS_YML)
    with caplog.at_level(logging.WARNING):
        cfg = load_in(home, create_file=False)
    assert cfg["hostname"] == "nas.example.com"
    assert cfg["scheme"] == "http"
    assert cfg["log-level"] == "error"
    assert cfg["md5"] is False
    assert cfg["filesystem.packages"] == str(home / "packages")
    assert cfg["filesystem.models"] == ""  # gosspks' downloaded models.yml is not there: the bundled list
    assert cfg["keyrings"] == [KEY]
    assert config.keyring_texts(cfg) == [KEY]
    assert "cache" in caplog.text and "ignored" in caplog.text


def test_gosspks_yml_in_the_home_is_found_when_there_is_no_config_yml(home: Path) -> None:
    path = write_config(home, GOSSPKS_YML, "gosspks.yml")
    cfg = load_in(home)
    assert cfg["config"] == str(path) and cfg["hostname"] == "nas.example.com"
    assert not (home / "config.yml").exists()  # an existing file is no first run


def test_spklite_section_wins_over_gosspks_section(home: Path) -> None:
    write_config(home, "gosspks:\n  port: 1000\n  hostname: a\nspklite:\n  port: 2000\n")
    cfg = load_in(home, create_file=False)
    assert (cfg["port"], cfg["hostname"]) == (2000, "a")


def test_keys_are_case_insensitive_and_null_means_unset(home: Path) -> None:
    write_config(home, "spklite:\n  Port: 1234\n  Server:\n    Threads: 9\n  hostname:\n")
    cfg = load_in(home, create_file=False)
    assert (cfg["port"], cfg["server.threads"], cfg["hostname"]) == (1234, 9, "")


def test_unknown_keys_are_a_warning_not_an_error(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_config(home, "spklite:\n  port: 1234\n  colour: blue\n  server:\n    turbo: on\nport: 99\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_in(home, create_file=False)
    assert cfg["port"] == 1234
    assert "'colour'" in caplog.text and "'server.turbo'" in caplog.text
    assert "top-level key 'port'" in caplog.text


def test_yaml_errors_name_the_file_and_line(home: Path) -> None:
    path = write_config(home, "spklite:\n  port: 1\n  hostname: [unclosed\n")
    message = error_of(home)
    assert str(path) in message and "line" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "spklite: 5\n"])
def test_a_file_of_the_wrong_shape_is_an_error(home: Path, text: str) -> None:
    write_config(home, text)
    assert "not allowed" in error_of(home)


def test_a_bad_value_in_the_file_names_the_file(home: Path) -> None:
    path = write_config(home, "spklite:\n  server:\n    threads: many\n")
    message = error_of(home)
    assert message.startswith("server.threads: 'many' is not allowed:") and str(path) in message


def test_yaml_off_is_understood_for_watch(home: Path) -> None:
    write_config(home, "spklite:\n  watch: off\n")
    assert load_in(home, create_file=False)["watch"] == "off"


def test_the_parsed_file_is_kept_and_used_while_the_file_is_unchanged(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(home, "spklite:\n  port: 1234\n  keyrings: [a.asc]\n")
    kept = home / ".config.yml.json"
    assert load_in(home)["port"] == 1234 and kept.exists()

    def no_yaml(text: str) -> Any:
        raise AssertionError("parsed again")

    with monkeypatch.context() as patched:
        patched.setattr(config, "load_yaml", no_yaml)
        cfg = load_in(home)  # the kept document serves
    assert cfg["port"] == 1234 and cfg["keyrings"] == [str(home / "a.asc")]
    path.write_text("spklite:\n  port: 4321\n")  # edited: parsed again, kept anew
    assert load_in(home)["port"] == 4321
    kept.write_text('{"sha256": "damaged')
    assert load_in(home)["port"] == 4321
    path.write_text("spklite:\n  port: 1111\n")
    kept.write_text(kept.read_text().replace("4321", "9999"))  # another file's: its hash does not match
    assert load_in(home)["port"] == 1111


def test_a_config_file_that_is_not_utf8_is_named(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "config.yml").write_bytes("spklite:\n  defaults:\n    maintainer: Jos\xe9\n".encode("latin-1"))
    assert "must be UTF-8 text" in error_of(home)
    assert not (home / ".config.yml.json").exists()


def test_the_parsed_file_is_not_kept_by_the_config_command_or_when_json_would_change_it(home: Path) -> None:
    write_config(home, "spklite:\n  port: 1234\n")
    load_in(home, create_file=False)  # what `spklite config` does: it writes nothing
    assert not (home / ".config.yml.json").exists()
    write_config(home, "spklite:\n  port: 1234\n  defaults:\n    maintainer: 2024-01-02\n")  # a YAML date
    assert load_in(home)["defaults.maintainer"] == "2024-01-02"
    assert not (home / ".config.yml.json").exists()


# First run ##################################################################################################


def test_first_run_writes_the_defaults(home: Path) -> None:
    cfg = load_in(home, {"port": "9000"}, {"SPKLITE_DEFAULTS_MAINTAINER": "Me"})
    assert not (home / "config.yml").exists()  # loading writes nothing: write_first_run does, once logging is set
    config.write_first_run(cfg)
    text = (home / "config.yml").read_text()
    document = yaml.safe_load(text)
    assert document["spklite"]["port"] == 8080  # this run's flag and variable are not saved
    assert document["spklite"]["defaults"]["maintainer"] == ""
    assert document["spklite"]["filesystem"]["packages"] == "packages"  # inside home: written relative
    assert "home" not in document["spklite"] and "config" not in document["spklite"]
    assert load_in(home) == load_in(home, create_file=False) == {**cfg, "port": 8080, "defaults.maintainer": ""}


def test_an_existing_file_is_never_rewritten(home: Path) -> None:
    path = write_config(home, "spklite:\n  port: 1234\n")
    config.write_first_run(load_in(home, {"port": "4321"}))
    assert path.read_text() == "spklite:\n  port: 1234\n"


def test_first_run_file_at_an_explicit_config_path(tmp_path: Path, home: Path) -> None:
    target = tmp_path / "elsewhere.yml"
    config.write_first_run(load_in(home, {"config": str(target)}))
    assert yaml.safe_load(target.read_text())["spklite"]["port"] == 8080


def test_no_crash_when_the_home_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = load({"home": str(blocker / "home")}, {})
    config.write_first_run(cfg)
    assert cfg["port"] == 8080
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_no_crash_when_the_home_is_read_only(tmp_path: Path) -> None:
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o555)
    try:
        cfg = load({"home": str(home)}, {})
        config.write_first_run(cfg)
        assert cfg["home"] == str(home) and not (home / "config.yml").exists()
    finally:
        home.chmod(0o755)


# Values #####################################################################################################


@pytest.mark.parametrize(
    "raw, seconds",
    [
        ("2", 2.0),
        (3, 3.0),
        ("0.5", 0.5),
        ("1.5m", 90.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (" 10 s ", 10.0),
        ("2H", 7200.0),
    ],
)
def test_durations(home: Path, raw: Any, seconds: float) -> None:
    assert load_in(home, {"poll-interval": raw}, create_file=False)["poll-interval"] == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "2 weeks", "1x", "s", "1m-5s", "nan", True])
def test_bad_durations(home: Path, raw: Any) -> None:
    assert error_of(home, {"poll-interval": raw}).startswith("poll-interval: ")


@pytest.mark.parametrize(
    "raw, size",
    [
        ("2048", 2048),
        (1536, 1536),
        ("512K", 512 << 10),
        ("1M", 1 << 20),
        ("1MiB", 1 << 20),
        ("1MB", 10**6),
        ("1.5k", 1536),
        ("2 GiB", 2 << 30),
        ("64kb", 64000),
    ],
)
def test_sizes(home: Path, raw: Any, size: int) -> None:
    assert (
        load_in(home, {"server.max-request-body-size": raw}, create_file=False)["server.max-request-body-size"] == size
    )


@pytest.mark.parametrize("raw", ["1X", "0", "-5", "M", "100", "1 TB"])
def test_bad_sizes(home: Path, raw: str) -> None:
    assert error_of(home, {"server.max-request-header-size": raw}).startswith("server.max-request-header-size: ")


@pytest.mark.parametrize(
    "raw, prefix",
    [("download", "/download"), ("/dl", "/dl"), ("dl/", "/dl"), ("/pkgs/v2/", "/pkgs/v2"), (" files ", "/files")],
)
def test_prefixes_with_or_without_slashes(home: Path, raw: str, prefix: str) -> None:
    assert load_in(home, {"router.download": raw}, create_file=False)["router.download"] == prefix


@pytest.mark.parametrize(
    "raw", ["/", "", "v1", "/v1/x", "/about", "health", "getList", "a/../b", "a//b", "with space", "a?b"]
)
def test_bad_prefixes(home: Path, raw: str) -> None:
    assert error_of(home, {"router.static": raw}).startswith("router.static: ")


@pytest.mark.parametrize("download, static", [("/files", "files"), ("/a", "/a/b"), ("/a/b", "a")])
def test_download_and_static_prefixes_must_be_apart(home: Path, download: str, static: str) -> None:
    assert "router.static" in error_of(home, {"router.download": download, "router.static": static})


def test_a_changed_download_prefix_clashing_with_the_default_static_is_blamed(home: Path) -> None:
    assert error_of(home, {"router.download": "static"}).startswith("router.download: '/static'")


@pytest.mark.parametrize(
    "raw, level",
    [
        ("DEBUG", "debug"),
        ("Error", "error"),
        ("Warn", "warning"),
        ("trace", "debug"),
        ("Fatal", "error"),
        ("info", "info"),
    ],
)
def test_log_levels_include_gosspks_names(home: Path, raw: str, level: str) -> None:
    assert load_in(home, {"log-level": raw}, create_file=False)["log-level"] == level


@pytest.mark.parametrize("raw, value", [("yes", True), ("Off", False), ("1", True), ("false", False), (True, True)])
def test_booleans(home: Path, raw: Any, value: bool) -> None:
    assert load_in(home, {"follow-symlinks": raw}, create_file=False)["follow-symlinks"] is value


@pytest.mark.parametrize(
    "raw, value",
    [
        ("nas.example.com", "nas.example.com"),
        ("nas.lan:5000/", "nas.lan:5000"),
        ("example.com/spk", "example.com/spk"),
        ("[::1]:8080", "[::1]:8080"),
    ],
)
def test_hostnames(home: Path, raw: str, value: str) -> None:
    assert load_in(home, {"hostname": raw}, create_file=False)["hostname"] == value


@pytest.mark.parametrize("raw", ["http://nas.lan", "nas lan", "nas.lan?x=1"])
def test_bad_hostnames(home: Path, raw: str) -> None:
    assert error_of(home, {"hostname": raw}).startswith("hostname: ")


@pytest.mark.parametrize("raw", ["127.0.0.1", "*", "::1", ""])
def test_trusted_proxies(home: Path, raw: str) -> None:
    assert load_in(home, {"server.trusted-proxy": raw}, create_file=False)["server.trusted-proxy"] == raw


def test_trusted_proxy_headers_from_text_and_lists(home: Path) -> None:
    cfg = load_in(home, {"server.trusted-proxy-headers": "X-Forwarded-For, forwarded"}, create_file=False)
    assert cfg["server.trusted-proxy-headers"] == ["x-forwarded-for", "forwarded"]
    cfg = load_in(home, {"server.trusted-proxy-headers": ["x-forwarded-proto"]}, create_file=False)
    assert cfg["server.trusted-proxy-headers"] == ["x-forwarded-proto"]
    assert "x-evil" in error_of(home, {"server.trusted-proxy-headers": "x-evil"})


def test_host_accepts_ipv6_in_brackets(home: Path) -> None:
    assert load_in(home, {"host": "[::]"}, create_file=False)["host"] == "::"


@pytest.mark.parametrize(
    "flags, key",
    [
        ({"port": "70000"}, "port"),
        ({"port": "http"}, "port"),
        ({"port": "0"}, "port"),
        ({"server.threads": "0"}, "server.threads"),
        ({"scheme": "ftp"}, "scheme"),
        ({"watch": "never"}, "watch"),
        ({"log-level": "loud"}, "log-level"),
        ({"md5": "maybe"}, "md5"),
        ({"host": ""}, "host"),
        ({"server.trusted-proxy": "proxy.lan"}, "server.trusted-proxy"),
        ({"filesystem.packages": ""}, "filesystem.packages"),
        ({"keyrings": ["-----BEGIN PGP PUBLIC KEY BLOCK----- cut short"]}, "keyrings"),
        ({"home": ""}, "home"),
    ],
)
def test_every_bad_value_is_one_line_naming_key_value_and_what_is_allowed(
    home: Path, flags: Dict[str, Any], key: str
) -> None:
    message = error_of(home, flags)
    assert message.startswith(f"{key}: '")
    assert "is not allowed: " in message


def test_the_message_names_an_environment_source(home: Path) -> None:
    message = error_of(home, environ={"GOSSPKS_PORT": "eighty"})
    assert message == ("port: 'eighty' is not allowed: a whole number from 1 to 65535 (from environment GOSSPKS_PORT)")


# Paths and keyrings #########################################################################################


def test_relative_flag_paths_are_taken_from_the_current_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models.yml"
    models.write_text("[]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_in(
        home,
        {"filesystem.packages": "spk", "filesystem.cache": "/var/cache/spklite", "filesystem.models": str(models)},
        create_file=False,
    )
    assert cfg["filesystem.packages"] == str(tmp_path / "spk")
    assert cfg["filesystem.cache"] == "/var/cache/spklite"
    assert cfg["filesystem.models"] == str(models)


def test_keyrings_files_and_armoured_keys(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir()
    (home / "mine.asc").write_text("comment\n" + KEY + "\n")
    monkeypatch.chdir(home)
    cfg = load_in(home, {"keyrings": ["mine.asc", KEY]}, create_file=False)
    assert cfg["keyrings"] == [str(home / "mine.asc"), KEY]
    assert config.keyring_texts(cfg) == [KEY, KEY]


def test_keyrings_from_the_environment_are_colon_separated(home: Path) -> None:
    cfg = load_in(home, environ={"SPKLITE_KEYRINGS": "/a.asc:/b.asc"}, create_file=False)
    assert cfg["keyrings"] == ["/a.asc", "/b.asc"]


def test_an_unreadable_keyring_names_the_file(home: Path, tmp_path: Path) -> None:
    cfg = load_in(home, {"keyrings": ["/nonexistent/key.asc"]}, create_file=False)
    with pytest.raises(ConfigError, match=r"^keyrings: cannot read '/nonexistent/key.asc'"):
        config.keyring_texts(cfg)
    binary = tmp_path / "key.gpg"
    binary.write_bytes(b"\x99\x01\x0d\x04\xff")
    cfg = load_in(home, {"keyrings": [str(binary)]}, create_file=False)
    with pytest.raises(ConfigError, match="ASCII-armoured"):
        config.keyring_texts(cfg)


# Output #####################################################################################################


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_dump_reads_back_as_the_same_config(home: Path, tmp_path: Path, fmt: str) -> None:
    cfg = load_in(
        home,
        {
            "port": "8081",
            "poll-interval": "1.5",
            "server.channel-timeout": "90",
            "server.max-request-body-size": "100000",
            "keyrings": [KEY],
            "debug-package": True,
            "filesystem.cache": "/srv/cache",
        },
        create_file=False,
    )
    text = config.dump(cfg, fmt)
    dumped = tmp_path / f"dumped.{fmt}"
    dumped.write_text(text)  # JSON is YAML, so both are valid config files
    again = load_in(home, {"config": str(dumped)}, create_file=False)
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in cfg.items() if k != "config"}
    nested = yaml.safe_load(text)["spklite"]
    assert nested["server"]["channel-timeout"] == "90s" and nested["filesystem"]["cache"] == "/srv/cache"


# Hostile config files: alias bombs, NUL, files that never end ################################################


def alias_bomb(levels: int, last: str = "keyrings", width: int = 9) -> str:
    """A "billion laughs" document: each level lists the one before `width` times; `last` names the top."""
    lines = ["spklite:", "  l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines.append(f"  {last}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


MERGE_BOMB = "spklite:\n  m0: &m0 {a: 1, b: 2}\n" + "".join(
    f"  m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}, *m{n - 1}, *m{n - 1}], k{n}: {n}}}\n" for n in range(1, 9)
)


@pytest.mark.parametrize(
    "text",
    [
        alias_bomb(6),  # 9**6 strings under keyrings
        alias_bomb(6, last="colour"),  # under an unknown key: only the kept JSON would expand it
        "spklite:\n  defaults: &d\n    maintainer: [*d]\n",  # an alias inside its own anchor: no end
        MERGE_BOMB,  # merge keys copy what they merge
    ],
    ids=["list", "unknown-key", "recursive", "merge"],
)
def test_a_yaml_alias_bomb_is_refused_in_one_line(home: Path, text: str) -> None:
    path = write_config(home, text)
    message = error_of(home)
    assert message.startswith(f"{path}: ") and "alias" in message
    assert len(message) < 300
    with pytest.raises(ConfigError):
        load_in(home)  # serving: the document is refused before it is kept as JSON
    assert not (home / ".config.yml.json").exists()


def test_a_few_aliases_are_fine(home: Path) -> None:
    write_config(home, "spklite:\n  defaults:\n    maintainer: &me Team\n    distributor: *me\n")
    cfg = load_in(home)
    assert cfg["defaults.maintainer"] == cfg["defaults.distributor"] == "Team"


def test_an_alias_bomb_in_the_models_file_gives_the_bundled_list(tmp_path: Path) -> None:
    from spklite.app import load_models

    models = tmp_path / "models.yml"
    models.write_text(
        "- {model: DS-lol, platform: &p0 [lol, lol, lol, lol, lol, lol, lol, lol]}\n"
        + "".join(f"- {{model: DS-{n}, platform: &p{n} [{', '.join([f'*p{n - 1}'] * 8)}]}}\n" for n in range(1, 7))
    )
    assert load_models(str(models)) == load_models("")


@pytest.mark.parametrize(
    "text, key",
    [
        ('spklite:\n  filesystem:\n    packages: "spk\\0files"\n', "filesystem.packages"),
        ('spklite:\n  keyrings: ["a\\0.asc"]\n', "keyrings"),
        ('spklite:\n  defaults:\n    maintainer: "Me\\0"\n', "defaults.maintainer"),
        ("spklite:\n  defaults:\n    maintainer: !!binary TWU=\n", "defaults.maintainer"),
        ('spklite:\n  host: "127.0.0.1\\0"\n', "host"),
        ("spklite:\n  poll-interval: .inf\n", "poll-interval"),
        ("spklite:\n  server:\n    channel-timeout: .nan\n", "server.channel-timeout"),
        ("spklite:\n  server:\n    max-request-body-size: 1.0e+400\n", "server.max-request-body-size"),
        (f"spklite:\n  server:\n    max-request-body-size: \"{'9' * 400}\"\n", "server.max-request-body-size"),
        (f"spklite:\n  port: {'9' * 400}\n", "port"),
    ],
)
def test_odd_values_in_the_file_are_one_line_naming_the_setting(home: Path, text: str, key: str) -> None:
    write_config(home, text)
    message = error_of(home)
    assert message.startswith(f"{key}: ") and "is not allowed: " in message


def test_a_models_path_that_is_not_a_file_gives_the_bundled_list(home: Path) -> None:
    assert load_in(home, {"filesystem.models": "/dev/zero"}, create_file=False)["filesystem.models"] == ""


# Settings that passed validation and then crashed the server ##############################################


@pytest.mark.parametrize(
    "raw, host", [("::", "::"), ("[::1]", "::1"), ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost")]
)
def test_hosts_that_bind(home: Path, raw: str, host: str) -> None:
    assert load_in(home, {"host": raw}, create_file=False)["host"] == host  # localhost: from /etc/hosts


@pytest.mark.parametrize("raw", ["256.1.1.1", "1.2.3.4.5", "-1", "nas..lan", "-nas", "nås.lan", "a" * 64 + ".lan", "*"])
def test_hosts_that_are_neither_addresses_nor_names_are_refused_without_a_lookup(
    home: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    real = socket.getaddrinfo

    def numeric_only(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("flags", 0) & socket.AI_NUMERICHOST, f"looked up {host!r}"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    assert error_of(home, {"host": raw}).startswith("host: ")


def fake_resolver(monkeypatch: pytest.MonkeyPatch, answer: Callable[..., Any]) -> None:
    """getaddrinfo answering host names with `answer(host, port, ...)`: no DNS in tests. Addresses as they are."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            real(host, None, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            if not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:  # a lookup: the fake answers
                return answer(host, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_host_name_that_does_not_resolve_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_resolver(monkeypatch, unknown)
    message = error_of(home, {"host": "nas.example"})
    assert message.startswith("host: 'nas.example' is not allowed: ") and "resolves" in message


def test_a_host_name_lookup_that_hangs_is_refused_in_bounded_time(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hanging(host: str, *args: Any, **kwargs: Any) -> Any:
        time.sleep(3)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    fake_resolver(monkeypatch, hanging)
    monkeypatch.setattr(config, "HOST_LOOKUP_SECONDS", 0.2)
    started = time.monotonic()
    assert error_of(home, environ={"SPKLITE_HOST": "slow.example"}).startswith("host: 'slow.example'")
    assert time.monotonic() - started < 2


def test_a_host_name_that_resolves_is_kept(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, lambda host, *args, **kwargs: socket.getaddrinfo("127.0.0.1", *args, **kwargs))
    assert load_in(home, {"host": "nas.example"}, create_file=False)["host"] == "nas.example"


@pytest.mark.parametrize(
    "key, raw",
    [
        ("poll-interval", "999999999999d"),  # threading's wait overflowed every second
        ("poll-interval", "25h"),
        ("server.channel-timeout", "99999999999999999999"),
        ("server.channel-timeout", "2d"),
        ("server.max-request-body-size", "9" * 400),  # float: inf, int(): OverflowError
        ("server.max-request-header-size", "9" * 400 + "G"),
        ("server.threads", "9" * 5000),
        ("port", "-0"),
        ("server.connection-limit", "2"),  # waitress' own two channels fill it: nothing is ever accepted
        ("defaults.maintainer", "Me\0"),
        ("keyrings", "a.asc\0"),
    ],
)
def test_extreme_values_are_one_line_naming_the_setting(home: Path, key: str, raw: str) -> None:
    assert error_of(home, {key: raw}).startswith(f"{key}: ")


@pytest.mark.parametrize(
    "flags",
    [
        {"server.trusted-proxy": "*", "server.trusted-proxy-headers": "forwarded x-forwarded-host"},
        {"server.trusted-proxy": "10.0.0.1", "server.trusted-proxy-headers": ["x-forwarded-for", "forwarded"]},
    ],
)
def test_waitress_rules_across_settings_are_checked_when_loading(home: Path, flags: Dict[str, Any]) -> None:
    message = error_of(home, flags)
    assert message.startswith("server.trusted-proxy-headers: '") and "Forwarded" in message


def test_the_longest_allowed_durations(home: Path) -> None:
    cfg = load_in(home, {"poll-interval": "1d", "server.channel-timeout": "24h"}, create_file=False)
    assert cfg["poll-interval"] == cfg["server.channel-timeout"] == 86400


def test_a_config_file_that_never_ends_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"config": "/dev/zero"})
    assert message == "config: '/dev/zero' is not allowed: a YAML file of at most 1MiB"


def test_a_keyring_that_never_ends_is_refused(home: Path) -> None:
    cfg = load_in(home, {"keyrings": ["/dev/zero"]}, create_file=False)
    with pytest.raises(ConfigError, match=r"^keyrings: '/dev/zero' is not allowed: a file of at most 1MiB"):
        config.keyring_texts(cfg)


@pytest.mark.parametrize("text", [alias_bomb(6), "a: &a [*a]\n", "[" * 5000 + "]" * 5000])
def test_the_pure_python_parser_refuses_the_same(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """The zipapp's PyYAML has no libyaml; its composer recurses once per level of nesting."""
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    config._safe_loader.cache_clear()
    try:
        with pytest.raises(yaml.YAMLError):
            config.load_yaml(text)
    finally:
        config._safe_loader.cache_clear()


ODD_VALUES = [
    "", " ", "0", "-1", "1", "+5", "1.5", ".5", "1e3", "0x10", "1_000", "999999999999999999999999", "9" * 400,
    "9" * 5000, "nan", "inf", "-inf", "1e309", "999999999999d", "99999999999999999G", "é", "日本語", "\udcff",
    "\t", "*", "::", "[::]", "256.1.1.1", "localhost", "nas.example", "forwarded x-forwarded-host", "a" * 5000,
]  # fmt: skip
ODD_YAML = [
    ".nan", ".inf", "-.inf", "1.0e+400", "9" * 30, "-5", "0", "null", "true", "[]", "{}", "[1, 2]", "{a: 1}",
    '"a\\0b"', "!!binary aGVsbG8=", "2024-01-02", "0x1F", "1:20", '"é"', "[[a]]", "'\\t'", "!!float 1e999",
]  # fmt: skip


@pytest.mark.parametrize("key", [s.key for s in config.SCHEMA])
def test_odd_values_from_every_source_are_taken_or_refused_in_one_line(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """Every setting x odd values x flags, environment and file: one line naming the setting, or a value that
    waitress takes (load checks that) and that `spklite config` prints back as the same setting."""

    def names(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            return socket.getaddrinfo("127.0.0.1", *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_resolver(monkeypatch, names)
    setting = config.BY_KEY[key]
    *sections, leaf = key.split(".")
    nesting = "".join(f"{'  ' * (depth + 1)}{section}:\n" for depth, section in enumerate(sections))
    sources: list[tuple[dict[str, Any], dict[str, str], str]] = []
    for value in ODD_VALUES:
        sources.append(({key: value}, {}, ""))
        sources.append(({}, {setting.env_names[0]: value}, ""))
        if not setting.meta and "\udcff" not in value:
            sources.append(({}, {}, f"{json.dumps(value)}"))
    if not setting.meta:
        sources.extend(({}, {}, text) for text in ODD_YAML)
    for flags, environ, scalar in sources:
        config_file = write_config(home, f"spklite:\n{nesting}{'  ' * (len(sections) + 1)}{leaf}: {scalar}\n")
        if not scalar:
            config_file.unlink()
        try:
            cfg = load_in(home, flags, environ, create_file=False)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message, message
            # the home names the config file: a home of 5,000 characters is a config file that cannot be read
            assert message.startswith((f"{key}: ", f"{config_file}: ", "config: ")), (flags, environ, scalar, message)
            continue
        dumped = tmp_path / "dumped.yml"
        dumped.write_text(config.dump(cfg), encoding="utf-8", errors="surrogateescape")
        again = load_in(home, {"config": str(dumped)}, create_file=False)
        if not setting.meta:
            assert again[key] == cfg[key], (flags, environ, scalar)
