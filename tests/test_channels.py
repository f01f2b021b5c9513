"""Channels as source URLs (issue 13): /beta/ serves the beta channel whatever the NAS asks; a `channels:` entry
offers a sub-folder's files at its prefix only, a /s/<token>/ one privately. Tested against a real server."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from conftest import lock, unlock, wait_for
from spkbuilder import build_broken, build_spk

from spklite import publish

TOKEN = "Zq3v9TtWkP0cXo2N_r8LmA-hYd41"
QUERY = "?arch=x86_64&build=72806&major=7&minor=2&language=enu&unique=synology_x86_64_920%2B"
STABLE_7 = QUERY + "&package_update_channel=stable"
STABLE_6 = "?arch=x86_64&build=25556&major=6&minor=2&package_update_channel=stable"
CONFIG = f"""\
spklite:
  channels:
    /testing/: testing
    /s/{TOKEN}/:
      folder: private
"""


def offered(server: Any, path: str) -> Dict[str, Dict[str, Any]]:
    answer = server.json(path)
    return {p["package"]: p for p in (answer if isinstance(answer, list) else answer["packages"])}


def status(server: Any, path: str, headers: Optional[Dict[str, str]] = None) -> int:
    try:
        return server.get(path, headers)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def fetch(url: str) -> Tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def serving(tmp_path: Path, run_server: Callable[..., Any], config: str = CONFIG) -> Tuple[Any, Path]:
    """A server over: stable/ foo 1.0 and beta foo 2.0 (DSM 7, main catalog), testing/bar, private/secret."""
    home = tmp_path / "home"
    folder = home / "packages"
    for sub in ("testing", "private"):
        (folder / sub).mkdir(parents=True)
    build_spk(folder / "foo-1.spk", {"package": "foo", "version": "1.0-1", "arch": "x86_64"})
    build_spk(folder / "foo-2.spk", {"package": "foo", "version": "2.0-1", "arch": "x86_64", "beta": "yes",
                                     "report_url": "https://example.invalid/bugs"})
    build_spk(folder / "old6.spk", {"package": "old", "version": "1.0-1", "arch": "x86_64", "beta": "yes",
                                    "os_min_ver": "6.1-15047"})
    build_spk(folder / "testing" / "bar.spk", {"package": "bar", "version": "0.9-1", "arch": "x86_64"})
    build_spk(folder / "private" / "secret.spk", {"package": "secret", "version": "3.0-1", "arch": "noarch"})
    (home / "config.yml").write_text(config)
    return run_server(), folder


def test_beta_prefix_gives_the_beta_channel_unflagged_to_a_stable_dsm7_nas(tmp_path: Path, run_server: Any) -> None:
    server, _ = serving(tmp_path, run_server)
    for _ in range(2):  # alternately: each prefix's answer is its own, not one memoised for another
        assert offered(server, "/" + STABLE_7)["foo"]["version"] == "1.0-1"
        beta = offered(server, "/beta/" + STABLE_7)
        assert beta["foo"]["version"] == "2.0-1"
        assert "beta" not in beta["foo"] and "report_url" not in beta["foo"]  # DSM 7 hides flagged ones
        assert beta["foo"]["link"] == server.url + "/beta/download/foo-2.spk"
        assert offered(server, "/beta/" + QUERY)["foo"]["version"] == "2.0-1"  # no channel sent at all
    assert offered(server, "/" + STABLE_6) == {}
    old = offered(server, "/beta/" + STABLE_6)["old"]  # DSM 6 knows the flag: it keeps it
    assert old["beta"] is True
    assert "bar" not in beta and "secret" not in beta  # channel folders are not the beta channel's
    # the same through a POST form (DSM 3-6), bottle's route (HEAD) and getList
    request = urllib.request.Request(server.url + "/beta/", data=STABLE_6[1:].encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["packages"][0]["beta"] is True
    assert status(server, "/beta/getList/v0/7/2/0/72806/0/x86_64/stable/synology_x86_64_920+/enu") == 200
    listed = server.json("/beta/getList/v0/7/2/0/72806/0/x86_64/stable/synology_x86_64_920+/enu")["packages"]
    assert [p["version"] for p in listed] == ["2.0-1"]
    assert fetch(beta["foo"]["link"])[0] == 200


def test_a_folder_channel_is_offered_only_at_its_prefix(tmp_path: Path, run_server: Any) -> None:
    server, folder = serving(tmp_path, run_server)
    assert set(offered(server, "/" + STABLE_7)) == {"foo"}
    assert set(offered(server, "/beta/" + STABLE_7)) == {"foo"}
    testing = offered(server, "/testing/" + STABLE_7)
    assert set(testing) == {"bar"}
    bar = testing["bar"]
    assert bar["link"] == server.url + "/testing/download/testing/bar.spk"
    assert fetch(bar["link"]) == (200, (folder / "testing" / "bar.spk").read_bytes())
    assert all(url.startswith(server.url + "/testing/static/") for url in bar["thumbnail"])
    code, icon = fetch(bar["thumbnail"][0])
    assert code == 200 and icon.startswith(b"\x89PNG")
    # nowhere else: not downloadable outside its prefix, nor a main file inside it
    for path in ("/download/testing/bar.spk", "/beta/download/testing/bar.spk", "/testing/download/foo-1.spk",
                 "/download/private/secret.spk", "/testing/download/private/secret.spk",
                 "/testing/download/testing/../private/secret.spk",
                 "/testing/download/testing/%2e%2e/private/secret.spk",
                 "/testing/../download/testing/bar.spk", "/testing/%2e%2e/download/foo-1.spk",
                 f"/testing/../s/{TOKEN}/download/private/secret.spk", "/testing//download/testing/bar.spk"):
        assert status(server, path) == 404, path
    assert status(server, "/download/foo-1.spk") == 200
    # the JSON API and the page under the prefix: the channel's files, links under it, membership shown
    files = server.json("/testing/v1/packages")
    assert [(f["file"], f["channels"]) for f in files] == [("testing/bar.spk", ["/testing/"])]
    assert files[0]["link"] == bar["link"]
    assert server.json("/testing/v1/packages/bar")[0]["file"] == "testing/bar.spk"
    assert {f["file"]: f["channels"] for f in server.json("/v1/packages")} == {
        "foo-1.spk": ["/", "/beta/"], "foo-2.spk": ["/", "/beta/"], "old6.spk": ["/", "/beta/"]}
    assert status(server, "/v1/packages/testing/bar.spk") == 404
    why = server.json("/testing/v1/explain?arch=x86_64&build=72806")
    assert [f["file"] for f in why["files"]] == ["testing/bar.spk"]
    html = {"Accept": "text/html"}
    page = server.get("/testing/", html)[2].decode()
    assert f'<p class="location" title="Location for Package Center">{server.url}/testing/</p>' in page
    assert 'data-version="0.9-1"' in page and 'data-version="1.0-1"' not in page
    assert "/testing/download/testing/bar.spk" in page
    root = server.get("/", html)[2].decode()
    assert f"{server.url}/testing/" in root and f"{server.url}/beta/" in root  # the public sources
    assert TOKEN not in root and "bar.spk" not in root
    picked = server.get("/beta/?platform=x86_64&dsm=7.2&channel=stable", html)[2].decode()
    assert 'data-version="2.0-1"' in picked  # the beta channel's page shows what its NAS gets
    # "/testing" without its slash: a browser is sent to the slash form, a NAS answered
    request = urllib.request.Request(server.url + "/testing?view=files", headers=html)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.url == server.url + "/testing/?view=files" and response.status == 200
    assert set(offered(server, "/testing" + STABLE_7)) == {"bar"}
    # what is no channel prefix is no route; publishing is not under a prefix
    assert status(server, "/testingx/" + STABLE_7) == 404
    assert status(server, "/testing/packages") == 404


def test_a_secret_prefix_serves_its_folder_and_nothing_tells_its_token(tmp_path: Path, run_server: Any) -> None:
    server, folder = serving(tmp_path, run_server)
    secret = offered(server, f"/s/{TOKEN}/" + STABLE_7)
    assert set(secret) == {"secret"}
    assert fetch(secret["secret"]["link"]) == (200, (folder / "private" / "secret.spk").read_bytes())
    assert secret["secret"]["link"].startswith(f"{server.url}/s/{TOKEN}/download/")
    assert fetch(secret["secret"]["thumbnail"][0])[0] == 200
    page = server.get(f"/s/{TOKEN}/", {"Accept": "text/html"})[2].decode()
    assert 'data-version="3.0-1"' in page
    wrong = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
    for path in (f"/s/{wrong}/" + STABLE_7, f"/s/{TOKEN[:-1]}/" + STABLE_7, "/s/" + STABLE_7,
                 f"/s/{wrong}/download/private/secret.spk", "/download/private/secret.spk",
                 "/v1/packages/private/secret.spk"):
        assert status(server, path) == 404, path
    for path in ("/", "/about", "/health", "/v1/packages", "/v1/rejected", "/beta/v1/packages",
                 "/testing/v1/packages"):
        assert TOKEN not in server.get(path, {"Accept": "text/html"})[2].decode(), path
        assert "secret.spk" not in server.get(path, {"Accept": "text/html"})[2].decode(), path
    build_broken(folder / "private" / "broken.spk", "gzip")  # a private file's name stays private, broken too
    assert wait_for(lambda: server.json(f"/s/{TOKEN}/v1/rejected"), timeout=5)[0]["file"] == "private/broken.spk"
    assert server.json("/v1/rejected") == [] and server.json("/testing/v1/rejected") == []
    about = server.json("/about")["channels"]
    assert [c["prefix"] for c in about] == ["/", "/beta/", "/testing/"]
    assert server.json("/health")["channels"] == ["/", "/beta/", "/testing/"]
    server.stop()
    log = server.output()
    assert f"/s/{TOKEN}" not in log and f"/s/{wrong}" not in log  # the access log masks tokens, wrong ones too
    assert '"GET /s/***/?arch=x86_64' in log


def test_health_keeps_a_secret_folders_problems_to_its_prefix(tmp_path: Path, run_limited: Any) -> None:
    """/health names unreadable files and folders; those of a secret channel's folder only at its own prefix
    (the folder's and files' names are the private source's), while the status tells the operator everywhere."""
    server, folder = serving(tmp_path, run_limited)
    locked, sub = tmp_path / "locked.spk", folder / "private" / "sub"
    build_spk(locked, {"package": "locked", "version": "1.0-1", "arch": "noarch"})
    sub.mkdir()
    build_spk(sub / "inside.spk", {"package": "inside", "version": "1.0-1", "arch": "noarch"})
    lock(locked)
    lock(sub)
    try:
        locked.rename(folder / "private" / "locked.spk")  # arrives unreadable
        server.proc.send_signal(signal.SIGHUP)  # the re-scan meets the locked folder
        paths = {str(folder / "private" / "locked.spk"), str(sub)}
        assert wait_for(lambda: {p["path"] for p in server.json(f"/s/{TOKEN}/health").get("problems", [])} == paths)
        for prefix in ("", "/testing", "/beta"):
            health = server.json(f"{prefix}/health")
            assert health["status"] == "degraded" and health["problems_in_secret_channels"] == 2, prefix
            assert "problems" not in health and "private" not in json.dumps(health), prefix
        assert "problems_in_secret_channels" not in server.json(f"/s/{TOKEN}/health")
    finally:
        unlock(sub)
        unlock(folder / "private" / "locked.spk")


def test_a_file_dropped_into_a_channel_folder_shows_at_its_prefix_within_a_second(
        tmp_path: Path, run_server: Any) -> None:
    server, folder = serving(tmp_path, run_server)
    assert set(offered(server, "/testing/" + STABLE_7)) == {"bar"}
    build_spk(tmp_path / "new.spk", {"package": "fresh", "version": "1.0-1", "arch": "x86_64"})
    (tmp_path / "new.spk").rename(folder / "testing" / "new.spk")  # as a copy tool lands a file
    start = time.monotonic()
    while "fresh" not in offered(server, "/testing/" + STABLE_7):
        assert time.monotonic() - start < 1.0, "not offered within a second"
        time.sleep(0.02)
    assert "fresh" not in offered(server, "/" + STABLE_7) and "fresh" not in offered(server, "/beta/" + STABLE_7)
    assert fetch(server.url + "/testing/download/testing/new.spk")[0] == 200


def test_a_channel_may_serve_its_folder_as_the_beta_channel(tmp_path: Path, run_server: Any) -> None:
    config = "spklite:\n  router:\n    beta: /preview\n  channels:\n    /testing/: {folder: testing, beta: true}\n"
    home = tmp_path / "home"
    (home / "packages" / "testing").mkdir(parents=True)
    build_spk(home / "packages" / "testing" / "b.spk", {"package": "b", "version": "1.0-1", "beta": "yes"})
    build_spk(home / "packages" / "a.spk", {"package": "a", "version": "1.0-1", "beta": "yes"})
    (home / "config.yml").write_text(config)
    server = run_server()
    assert set(offered(server, "/testing/" + STABLE_7)) == {"b"}
    assert set(offered(server, "/preview/" + STABLE_7)) == {"a"}
    assert status(server, "/beta/" + STABLE_7) == 404  # the beta prefix is where the config says


def config_error(home: Path, config: str, *flags: str) -> Tuple[int, str]:
    home.mkdir(exist_ok=True)
    (home / "config.yml").write_text(config)
    done = subprocess.run([sys.executable, "-m", "spklite", "--home", str(home), "config", *flags],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr.strip()


BAD_CHANNELS: List[Tuple[str, str]] = [
    ("{/v1/: testing}", "channels: prefix '/v1/' is not allowed: /v1 is a route of its own"),
    ("{/about/: testing}", "/about is a route of its own"),
    ("{/packages/: testing}", "/packages is a route of its own"),
    ("{/download/: testing}", "channels: '/download/' is not allowed: it clashes with router.download '/download'"),
    ("{/static/x/: testing}", "it clashes with router.static '/static'"),
    ("{/beta/: testing}", "channels: '/beta/' is not allowed: it clashes with router.beta '/beta'"),
    ("{/a/: x, /a/b/: y}", "channels: '/a/' is not allowed: it clashes with '/a/b/'"),
    ("{/: x}", "channels: prefix '/' is not allowed: a URL path such as /testing/"),
    ("{/t e/: x}", "channels: prefix '/t e/' is not allowed"),
    ("{/a/../b/: x}", "channels: prefix '/a/../b/' is not allowed"),
    ("{/t/: ../outside}", "channels: '/t/': folder '../outside' is not allowed: a sub-folder inside the packages "
                          "folder, relative to it"),
    ("{/t/: /srv/spk}", "folder '/srv/spk' is not allowed"),
    ("{/t/: .}", "folder '.' is not allowed"),
    ("{/t/: ''}", "folder '' is not allowed"),
    ("{/t/: x, /u/: x}", "channels: '/u/' is not allowed: its folder 'x' overlaps the folder 'x' of '/t/'"),
    ("{/t/: x, /u/: x/y}", "its folder 'x/y' overlaps the folder 'x'"),
    ("{/s/short/: x}", "channels: prefix '/s/…' is not allowed: a secret prefix is /s/<token>/, the token 22"),
    (f"{{/s/{TOKEN}/more/: x}}", "a secret prefix is /s/<token>/"),
    ("{/t/: {folder: x, beta: maybe}}", "channels: '/t/': beta is true or false"),
    ("{/t/: {folder: x, colour: red}}", "channels: '/t/' is not allowed: a sub-folder, or {folder: SUB/FOLDER"),
    ("[/testing/]", "channels: '['/testing/']' is not allowed: a mapping of URL prefixes to sub-folders"),
]


@pytest.mark.parametrize("value, message", BAD_CHANNELS)
def test_a_bad_channel_config_stops_with_one_clear_line(tmp_path: Path, value: str, message: str) -> None:
    code, err = config_error(tmp_path / "home", f"spklite:\n  channels: {value}\n")
    assert code != 0 and "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    assert TOKEN not in err


def test_channel_settings_from_flags_and_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, err = config_error(home, "", "--channels", "{/s/short: x")
    assert code != 0 and err.endswith("(from --channels)") and "/s/short" not in err, err
    code, err = config_error(home, "", "--router-beta", "/download")
    assert code != 0 and "router.beta: '/download' is not allowed: it clashes with router.download" in err, err
    done = subprocess.run([sys.executable, "-m", "spklite", "--home", str(home), "config", "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={"SPKLITE_CHANNELS": "{/t/: t, /u/: {folder: u, beta: yes}}", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["spklite"]
    assert shown["channels"] == {"/t/": "t", "/u/": {"folder": "u", "beta": True}}
    assert shown["router"]["beta"] == "/beta"


def test_an_upload_into_a_channel_folder_is_answered_with_links_under_its_prefix(
        tmp_path: Path, run_server: Any) -> None:
    key, entry = publish.new_key("ci")
    server, folder = serving(tmp_path, run_server, CONFIG + f"  publish:\n    folder: testing\n    keys: [{entry}]\n")
    build_spk(tmp_path / "up.spk", {"package": "up", "version": "1.0-1", "arch": "x86_64"})
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(server.url + "/packages", data=(tmp_path / "up.spk").read_bytes(),
                                     headers={"Authorization": auth}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
        assert response.status == 201
        assert response.headers["Location"] == "/testing/v1/packages/testing/up_x86_64_1.0-1.spk"
    assert answer["link"] == server.url + "/testing/download/testing/up_x86_64_1.0-1.spk"
    assert answer["channels"] == ["/testing/"]
    assert server.json(answer["link"][len(server.url):].replace("download", "v1/packages", 1)) == {
        k: v for k, v in answer.items() if k not in ("firmware", "architectures")}
    assert "up" in offered(server, "/testing/" + STABLE_7) and "up" not in offered(server, "/" + STABLE_7)
    request = urllib.request.Request(server.url + "/testing/packages", data=b"x", headers={"Authorization": auth},
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404
