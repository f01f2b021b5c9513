"""The Package Center protocol through the WSGI app (SPEC 1.1-1.5, 1.8)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from spkbuilder import build_broken, build_spk

DSM72 = {"arch": "apollolake", "build": "64570", "major": "7", "minor": "2", "language": "enu",
         "unique": "synology_apollolake_918+", "package_update_channel": "stable"}
DSM62 = {"arch": "armada38x", "build": "25556", "major": "6", "minor": "2", "micro": "4",
         "language": "enu", "unique": "synology_armada38x_ds218j"}


@pytest.fixture
def mixed(packages: Path) -> Path:
    """A folder of mixed packages (file name: what it is for)."""
    p = packages
    build_spk(p / "web-x64-dsm7.spk", {"package": "web", "version": "2.0-1", "arch": "x86_64"})
    build_spk(p / "web-apl-dsm7-beta.spk", {"package": "web", "version": "3.0-1", "arch": "apollolake",
                                             "beta": "yes", "report_url": "https://example.org/bugs"})
    build_spk(p / "web-dsm6.spk", {"package": "web", "version": "1.5-1", "arch": "armada38x x86_64",
                                   "os_min_ver": "6.1-15047"})
    build_spk(p / "tool-dsm6.spk", {"package": "tool", "version": "1.0-1", "arch": "noarch",
                                    "os_min_ver": None, "firmware": "5.2-5644",
                                    "displayname_fre": "Outil", "description_fre": "Un outil"})
    build_spk(p / "tool-dsm7.spk", {"package": "tool", "version": "1.0-2", "arch": "noarch"})
    build_spk(p / "arm.spk", {"package": "armonly", "version": "1.0-1", "arch": "armv8"})
    build_spk(p / "excluded.spk", {"package": "nox", "version": "1.0-1", "arch": "noarch",
                                   "exclude_arch": "apollolake"})
    build_spk(p / "model.spk", {"package": "modelpkg", "version": "1.0-1", "arch": "noarch",
                                "model": "synology_apollolake_918+ synology_geminilake_920+"})
    build_spk(p / "exmodel.spk", {"package": "exmodel", "version": "1.0-1", "arch": "noarch",
                                  "exclude_model": "SYNOLOGY_APOLLOLAKE_918+"})
    build_spk(p / "maxed.spk", {"package": "old7", "version": "1.0-1", "arch": "noarch",
                                "os_max_ver": "7.0-41890"})
    build_spk(p / "nomin.spk", {"package": "nomin", "version": "1.0-1", "arch": "noarch", "os_min_ver": None})
    build_broken(p / "broken.spk", "gzip")
    return p


def packages_of(body) -> list:
    return [(e["package"], e["version"]) for e in (body if isinstance(body, list) else body["packages"])]


# -- which packages a NAS sees (1.4) -----------------------------------------------


def test_dsm7_apollolake_gets_exactly_its_packages(mixed, make_client):
    app, _ = make_client()
    res = app.get("/", DSM72)
    assert res.status_int == 200
    assert res.content_type == "application/json"
    assert "charset=utf-8" in res.headers["Content-Type"]
    # web: beta 3.0-1 hidden on stable -> 2.0-1 (family x86_64); DSM 6 files never; nox excluded;
    # exmodel excluded by model; old7 above os_max_ver; nomin has no minimum -> DSM 6 only.
    assert packages_of(res.json) == [("modelpkg", "1.0-1"), ("tool", "1.0-2"), ("web", "2.0-1")]
    assert "keyrings" not in res.json


def test_dsm6_armada38x_gets_exactly_its_packages(mixed, make_client):
    app, _ = make_client()
    res = app.get("/", DSM62)
    # armada38x has no family: only exact platform and noarch; DSM 7 files never.
    assert packages_of(res.json) == [("nomin", "1.0-1"), ("tool", "1.0-1"), ("web", "1.5-1")]
    assert res.json["keyrings"] == []


def test_beta_channel_gets_newest_beta_unflagged_on_dsm7(mixed, make_client):
    app, _ = make_client()
    res = app.get("/", dict(DSM72, package_update_channel="beta"))
    web = [e for e in res.json["packages"] if e["package"] == "web"][0]
    assert web["version"] == "3.0-1"
    assert "beta" not in web and "report_url" not in web


def test_beta_flagged_for_dsm6(packages, make_client):
    build_spk(packages / "b.spk", {"package": "b", "version": "1-1", "os_min_ver": "6.0-7393", "beta": "TRUE"})
    build_spk(packages / "r.spk", {"package": "r", "version": "1-1", "os_min_ver": "6.0-7393",
                                   "report_url": "https://bugs"})
    app, _ = make_client()
    assert app.get("/", dict(DSM62, package_update_channel="stable")).json["packages"] == []
    entries = app.get("/", dict(DSM62, package_update_channel="beta")).json["packages"]
    assert [(e["package"], e.get("beta"), e.get("report_url")) for e in entries] == [
        ("b", True, None), ("r", True, "https://bugs")]


def test_dsm7_model_must_match_unique(mixed, make_client):
    app, _ = make_client()
    other = dict(DSM72, unique="synology_apollolake_218+")
    names = [p for p, _ in packages_of(app.get("/", other).json)]
    assert "modelpkg" not in names and "exmodel" in names


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_raw_plus_in_unique_is_a_plus(mixed, make_client, method):
    """DSM sends `unique=synology_apollolake_918+` unencoded: form decoding makes the `+` a space."""
    app, _ = make_client()
    query = "arch=apollolake&build=64570&major=7&minor=2&language=enu&unique=synology_apollolake_918+"
    if method == "GET":
        res = app.get("/?" + query)
    else:
        res = app.post("/", query, content_type="application/x-www-form-urlencoded")
    names = [p for p, _ in packages_of(res.json)]
    assert "modelpkg" in names and "exmodel" not in names


def test_88f6282_is_treated_as_88f6281(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "arch": "88f6281", "os_min_ver": "5.0-4458"})
    build_spk(packages / "f.spk", {"package": "f", "arch": "armv5", "os_min_ver": "5.0-4458"})
    app, _ = make_client()
    res = app.get("/", {"arch": "88f6282", "build": "5644"})
    assert [p for p, _ in packages_of(res.json)] == ["a", "f"]


def test_unknown_platform_gets_only_noarch(mixed, make_client):
    app, _ = make_client()
    res = app.get("/", dict(DSM72, arch="quantum9000"))
    assert [p for p, _ in packages_of(res.json)] == ["modelpkg", "nox", "tool"]


def test_exclude_arch_and_firmware_range(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "os_min_ver": "7.1-42661"})
    build_spk(packages / "b.spk", {"package": "b", "os_min_ver": "7.0-40000", "os_max_ver": "7.1-42661"})
    app, _ = make_client()
    assert packages_of(app.get("/", {"arch": "apollolake", "build": "42661"}).json) == [
        ("a", "1.0-1"), ("b", "1.0-1")]
    assert packages_of(app.get("/", {"arch": "apollolake", "build": "42660"}).json) == [("b", "1.0-1")]
    assert packages_of(app.get("/", {"arch": "apollolake", "build": "42662"}).json) == [("a", "1.0-1")]


def test_newest_version_and_tie_rules(packages, make_client):
    build_spk(packages / "v1.spk", {"package": "p", "version": "1.0.2b-1", "arch": "apollolake"})
    build_spk(packages / "v2.spk", {"package": "p", "version": "1.0.10-1", "arch": "noarch"})
    build_spk(packages / "q-noarch.spk", {"package": "q", "version": "2-1", "arch": "noarch"})
    build_spk(packages / "q-exact.spk", {"package": "q", "version": "2-1", "arch": "apollolake"})
    build_spk(packages / "r-low.spk", {"package": "r", "version": "2-1", "os_min_ver": "7.0-40000"})
    build_spk(packages / "r-high.spk", {"package": "r", "version": "2-1", "os_min_ver": "7.1-42661"})
    build_spk(packages / "s-b.spk", {"package": "s", "version": "2-1"})
    build_spk(packages / "s-a.spk", {"package": "s", "version": "2-1"})
    app, _ = make_client()
    got = {e["package"]: e["link"].rsplit("/", 1)[1] for e in app.get("/", DSM72).json["packages"]}
    assert got == {"p": "v2.spk", "q": "q-exact.spk", "r": "r-high.spk", "s": "s-a.spk"}


def test_no_revision_sorts_first(packages, make_client):
    build_spk(packages / "a.spk", {"package": "p", "version": "1.0"})
    build_spk(packages / "b.spk", {"package": "p", "version": "1.0-1"})
    app, _ = make_client()
    assert packages_of(app.get("/", DSM72).json) == [("p", "1.0-1")]


# -- shape and leniency (1.2, 1.3) -------------------------------------------------


def test_dsm32_post_gets_a_bare_list(packages, make_client):
    build_spk(packages / "old.spk", {"package": "old", "os_min_ver": None, "firmware": "3.1-1594",
                                     "arch": "x86", "description_fre": "Vieux"})
    app, _ = make_client()
    body = "timezone=Brussels&language=fre&unique=synology_x86_411+II&arch=x86&major=3&minor=2&build=1922"
    res = app.post("/", body, content_type="application/x-www-form-urlencoded",
                   headers={"User-Agent": "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"})
    assert isinstance(res.json, list)
    assert [(e["package"], e["desc"]) for e in res.json] == [("old", "Vieux")]


def test_dsm51_get_and_post_give_the_same_answer(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "os_min_ver": "5.0-4458"})
    app, _ = make_client()
    params = {"ds_sn": "1130LWN000000", "language": "ger", "timezone": "Amsterdam",
              "unique": "synology_cedarview_1512+", "arch": "cedarview", "major": "5", "minor": "1",
              "build": "5022", "package_update_channel": "stable"}
    get = app.get("/", params)
    post = app.post("/", params)
    assert get.body == post.body
    assert set(get.json) == {"packages", "keyrings"} and packages_of(get.json) == [("a", "1.0-1")]


def test_dsm62_lenient_micro(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "os_min_ver": "6.1-15047"})
    app, _ = make_client()
    res = app.get("/", {"language": "enu", "timezone": "Amsterdam", "unique": "synology_apollolake_918+",
                        "arch": "apollolake", "major": "6", "minor": "2", "micro": "6.2", "nano": "0",
                        "build": "25556", "package_update_channel": "stable"})
    assert packages_of(res.json) == [("a", "1.0-1")]


def test_dsm72_get_with_encoded_unique(mixed, make_client):
    app, _ = make_client()
    res = app.get("/?language=enu&timezone=Amsterdam&unique=synology_apollolake_918%2B&arch=apollolake"
                  "&major=7&minor=2&micro=1&nano=5&build=69057&package_update_channel=stable")
    assert "modelpkg" in [p for p, _ in packages_of(res.json)]


@pytest.mark.parametrize("params, expected", [
    ({"arch": "apollolake", "major": "7"}, ["tool"]),  # build derived: 7 -> 40000
    ({"arch": "apollolake", "build": "abc", "major": "7", "minor": "0"}, ["tool"]),
    ({"arch": "apollolake"}, []),  # no way to know the build
    ({"arch": "apollolake", "build": "-1"}, []),
    ({"unique": "synology_apollolake_918+"}, []),
    ({"arch": "", "build": ""}, []),
    ({"build": "99999999999999999999"}, []),
])
def test_odd_parameters_get_200_json(packages, make_client, params, expected):
    build_spk(packages / "t.spk", {"package": "tool", "arch": "noarch"})
    app, _ = make_client()
    res = app.get("/", params)
    assert res.status_int == 200
    assert [p for p, _ in packages_of(res.json)] == expected


def test_odd_bytes_in_parameters(packages, make_client):
    app, _ = make_client()
    for query in ("arch=%ff%fe&build=%00", "arch=apollolake&build=42661&language=%zz", "arch&build",
                  "arch=a&arch=b&build=1&build=2"):
        res = app.get("/?" + query)
        assert res.status_int == 200 and isinstance(res.json, (list, dict))


def test_a_person_without_parameters(make_client):
    app, _ = make_client()
    res = app.get("/", status=400)
    assert "arch" in res.json["error"] and "build" in res.json["expected"]
    page = app.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_int == 200 and page.content_type == "text/html"


def test_language_fallback(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "displayname": "Name", "displayname_fre": "Nom",
                                   "description": "Text", "description_fre": "Texte"})
    build_spk(packages / "b.spk", {"package": "b", "displayname": None, "description": None})
    app, _ = make_client()
    for lang, want in (("fre", ("Nom", "Texte")), ("ger", ("Name", "Text")), ("xx'", ("Name", "Text"))):
        e = app.get("/", dict(DSM72, language=lang)).json["packages"][0]
        assert (e["dname"], e["desc"]) == want
    b = app.post("/", dict(DSM72, language="fre")).json["packages"][1]
    assert (b["dname"], b["desc"]) == ("b", "")


def test_keyrings_for_dsm6_only(packages, make_client, tmp_path):
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n"
    (tmp_path / "key.asc").write_text(key)
    app, _ = make_client(keyrings=[str(tmp_path / "key.asc")])
    assert [k.strip() for k in app.get("/", DSM62).json["keyrings"]] == [key.strip()]
    assert "keyrings" not in app.get("/", DSM72).json


def test_json_is_strict_ascii(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "description": 'quote " backslash \\ tab \t é ✓ \u2028'})
    app, _ = make_client()
    res = app.get("/", DSM72)
    res.body.decode("ascii")
    assert json.loads(res.body)["packages"][0]["desc"] == 'quote " backslash \\ tab \t é ✓ \u2028'


# -- the entry (1.5) ---------------------------------------------------------------


def test_entry_fields_and_types(packages, make_client):
    (packages / "sub dir").mkdir()
    path = build_spk(packages / "sub dir" / "full pkg.spk", {
        "package": "full", "version": "1.2.3-4", "displayname": "Full", "description": "All of it",
        "install_dep_packages": "A>2.2.2:B", "install_conflict_packages": "C",
        "install_dep_services": "ssh", "maintainer": "me", "maintainer_url": "https://me",
        "distributor": "dist", "changelog": "<b>new</b>", "silent_install": "yes",
        "silent_upgrade": "no", "auto_upgrade_from": "1.0-1", "startable": "yes",
    }, icon=True, icon_256=True, screenshots=2)
    app, _ = make_client(**{"defaults.support-url": "https://support", "defaults.maintainer": "nobody"})
    e = app.get("/", DSM72, headers={"Host": "nas.example:8080"}).json["packages"][0]
    base = "http://nas.example:8080"
    assert e["package"] == "full" and e["version"] == "1.2.3-4"
    assert e["link"] == base + "/download/sub%20dir/full%20pkg.spk"
    assert e["size"] == path.stat().st_size
    assert e["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert len(e["thumbnail"]) == 2 and all(u.startswith(base + "/static/") for u in e["thumbnail"])
    assert e["thumbnail_retina"] == [e["thumbnail"][1]]
    assert len(e["snapshot"]) == 2
    assert (e["qinst"], e["qupgrade"], e["qstart"], e["start"]) == (True, True, True, True)
    assert (e["deppkgs"], e["conflictpkgs"], e["depsers"]) == ("A>2.2.2:B", "C", "ssh")
    assert (e["download_count"], e["recent_download_count"], e["price"]) == (0, 0, 0)
    assert e["startable"] == "yes"
    assert (e["maintainer"], e["maintainer_url"], e["distributor"]) == ("me", "https://me", "dist")
    assert e["support_url"] == "https://support" and "distributor_url" not in e
    assert e["changelog"] == "<b>new</b>"
    assert (e["silent_install"], e["silent_upgrade"], e["auto_upgrade_from"]) == (True, False, "1.0-1")
    assert "silent_uninstall" not in e and "beta" not in e
    for url in [e["link"], *e["thumbnail"], *e["snapshot"]]:
        assert app.get(url.replace(base, "")).status_int == 200


def test_entry_defaults_when_info_is_bare(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a", "maintainer": None, "displayname": None,
                                   "description": None}, icon=False)
    app, _ = make_client()
    e = app.get("/", DSM72).json["packages"][0]
    assert e["thumbnail"] == ["http://localhost:80/static/spklite-default-icon.png"]
    assert "thumbnail_retina" not in e and e["snapshot"] == []
    assert e["deppkgs"] is None and e["conflictpkgs"] is None and e["depsers"] is None
    assert "maintainer" not in e and "startable" not in e
    assert app.get(e["thumbnail"][0].split("localhost:80", 1)[-1]).content_type == "image/png"


def test_only_256_icon(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a"}, icon=False, icon_256=True)
    app, _ = make_client()
    e = app.get("/", DSM72).json["packages"][0]
    assert len(e["thumbnail"]) == 1 and e["thumbnail_retina"] == e["thumbnail"]


def test_base64_icon_is_served(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a"}, base64_icon=True)
    app, _ = make_client()
    e = app.get("/", DSM72).json["packages"][0]
    icon = app.get(e["thumbnail"][0].split("localhost:80", 1)[-1])
    assert icon.body.startswith(b"\x89PNG") and "immutable" in icon.headers["Cache-Control"]


@pytest.mark.parametrize("kwargs, info, expected", [
    ({}, {}, (True, True, True)),
    ({"license": True}, {}, (False, False, False)),
    ({"install_wizard": True}, {}, (False, True, False)),
    ({"upgrade_wizard": True}, {}, (True, False, True)),
    ({"empty_wizard_dir": True}, {}, (True, True, True)),
    ({}, {"startable": "no"}, (True, True, False)),
    ({}, {"ctl_stop": "no"}, (True, True, False)),
    ({"license": True}, {"qinst": "true", "qupgrade": "yes", "qstart": "1"}, (True, True, True)),
    ({}, {"qinst": "no", "qstart": "yes"}, (False, True, True)),
])
def test_quick_install_flags(packages, make_client, kwargs, info, expected):
    build_spk(packages / "a.spk", {"package": "a", **info}, **kwargs)
    app, _ = make_client()
    e = app.get("/", DSM72).json["packages"][0]
    assert (e["qinst"], e["qupgrade"], e["qstart"]) == expected
    assert e["start"] == e["qstart"]


def test_configured_hostname_and_scheme(packages, make_client):
    build_spk(packages / "a b.spk", {"package": "a"})
    app, _ = make_client(hostname="pkgs.example.org", scheme="https")
    e = app.get("/", DSM72, headers={"Host": "evil.example"}).json["packages"][0]
    assert e["link"] == "https://pkgs.example.org/download/" + quote("a b.spk")


def test_forwarded_headers_are_ignored_without_trusted_proxy(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a"})
    app, _ = make_client()
    headers = {"Host": "nas.lan:5000", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    e = app.get("/", DSM72, headers=headers).json["packages"][0]
    assert e["link"] == "http://nas.lan:5000/download/a.spk"


def test_hosts_do_not_leak_between_clients(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a"})
    app, _ = make_client()
    one = app.get("/", DSM72, headers={"Host": "one:1"}).json["packages"][0]["link"]
    two = app.get("/", DSM72, headers={"Host": "two:2"}).json["packages"][0]["link"]
    assert one.startswith("http://one:1/") and two.startswith("http://two:2/")
    bad = app.get("/", DSM72, headers={"Host": 'x"><script>'}).json["packages"][0]["link"]
    assert "script" not in bad


def test_md5_can_be_turned_off(packages, make_client):
    build_spk(packages / "a.spk", {"package": "a"})
    app, _ = make_client(md5=False)
    assert "md5" not in app.get("/", DSM72).json["packages"][0]


def test_debug_package_masks_serial(packages, make_client):
    app, _ = make_client(**{"debug-package": True})
    res = app.get("/", dict(DSM62, ds_sn="SECRET123"), headers={"Authorization": "Basic c2VjcmV0"})
    debug = [e for e in res.json["packages"] if e["package"] == "spklite-debug"][0]
    assert "arch=armada38x" in debug["desc"] and "build=25556" in debug["desc"]
    assert "SECRET123" not in res.text and "c2VjcmV0" not in res.text


def test_getlist_route_mimics_synology(mixed, make_client):
    app, _ = make_client()
    res = app.get("/getList/v0/7/2/1/64570/0/apollolake/stable/synology_apollolake_918+/enu")
    assert res.json == app.get("/", DSM72).json


def test_rejected_files_are_not_offered(mixed, make_client):
    app, _ = make_client()
    assert app.get("/download/broken.spk", status=404).json["error"]
    assert app.get("/v1/rejected").json == [
        {"file": "broken.spk", "reason": "compressed tar (gzip) — SPKs must be uncompressed"}]


def test_replayed_answers_follow_body_host_and_index(packages, make_client):
    build_spk(packages / "six.spk", {"package": "six", "os_min_ver": "6.1-15047"})
    build_spk(packages / "seven.spk", {"package": "seven"})
    app, index = make_client()
    for _ in range(2):  # the second round is answered from the replay cache
        assert packages_of(app.post("/", DSM62).json) == [("six", "1.0-1")]
        assert packages_of(app.post("/", DSM72).json) == [("seven", "1.0-1")]
    build_spk(packages / "seven.spk", {"package": "seven", "version": "2.0-1"})
    index.scan()
    assert packages_of(app.post("/", DSM72).json) == [("seven", "2.0-1")]


def test_non_ascii_digits_and_huge_numbers_match_less_never_fail(packages, make_client):
    # str.isdigit() takes "²" and int() refuses it; int() also refuses numbers of over 4,300 digits.
    build_spk(packages / "sup.spk", {"package": "sup", "version": "1.0-²", "os_min_ver": "6.1-15047"})
    build_spk(packages / "huge.spk", {"package": "huge", "version": "1." + "9" * 5000 + "-" + "9" * 5000,
                                      "os_min_ver": "6.1-" + "9" * 5000})
    build_spk(packages / "ok.spk", {"package": "ok", "os_min_ver": "6.1-15047"})
    app, _ = make_client()
    for query in ("arch=x86_64&build=%C2%B2", "arch=x86_64&major=%C2%B2", "arch=x86_64&build=%D9%A7"):
        assert app.get("/?" + query).json == {"packages": []}
    names = [p for p, _ in packages_of(app.get("/", dict(DSM62, arch="x86_64")).json)]
    assert names == ["huge", "ok", "sup"]  # a minimum that cannot be read counts as none


def test_memoised_answers_equal_fresh_ones_for_any_profile(mixed, make_client):
    """The memo's key drops what does not change an answer (builds between two steps, languages without
    texts): every answer from one busy catalog equals a fresh catalog's answer to that single question."""
    import random

    busy, _ = make_client()
    rng = random.Random(7)
    edges = [1, 5003, 5004, 5644, 15046, 15047, 25556, 39999, 40000, 41890, 41891, 64570, 99999]
    for _ in range(150):
        params = {"arch": rng.choice(["apollolake", "armada38x", "x86_64", "armv8", "nonsense", ""]),
                  "build": str(rng.choice(edges) + rng.choice([-1, 0, 0, 1])),
                  "language": rng.choice(["enu", "fre", "ger", "xyz", ""]),
                  "unique": rng.choice(["synology_apollolake_918+", "synology_geminilake_920+", ""]),
                  "package_update_channel": rng.choice(["beta", "stable"])}
        fresh, _ = make_client()
        assert busy.get("/", params).body == fresh.get("/", params).body, params


def test_candidates_by_platform_group_are_those_of_every_file(mixed, make_client):
    """A memo miss looks only at the files for the NAS's platform, family and noarch, of its DSM generation:
    for every platform, build and channel the answer is the one the rules give over all files."""
    from spklite import synology
    from spklite.catalog import Catalog, Query, newest_per_package

    build_spk(mixed / "q-noarch.spk", {"package": "q", "version": "2-1", "arch": "noarch"})
    build_spk(mixed / "q-exact.spk", {"package": "q", "version": "2-1", "arch": "apollolake noarch"})
    build_spk(mixed / "q-family.spk", {"package": "q", "version": "2-1", "arch": "x86_64 armv8"})
    build_spk(mixed / "a-first.spk", {"package": "q", "version": "2-1", "arch": "noarch x86_64"})
    _, index = make_client()
    catalog = Catalog(index.current.records.values(), {})
    platforms = sorted({*synology.PLATFORM_FAMILY, *synology.PLATFORMS_WITHOUT_FAMILY, "noarch", "", "x"})
    for platform in platforms:
        for build in (None, 5644, 15047, 25556, 40000, 41890, 42661, 64570):
            for beta in (False, True):
                query = Query(build, platform, "enu", beta, "synology_apollolake_918+")
                every = newest_per_package((o, rank) for o in catalog.offers
                                           if isinstance(rank := catalog.verdict(o, query), int))
                assert catalog.newest(query) == every, query


def test_a_catalog_edited_file_by_file_is_the_one_built_whole(mixed, make_client):
    """A new index state's catalog is the previous one with the changed files added and removed (not rebuilt):
    after additions, replacements and removals it offers, groups and answers as one built from scratch."""
    from spklite.catalog import Catalog, Links, Query

    _, index = make_client()
    links = Links("http://h", "/download", "/static", "icon.png")
    catalog = Catalog(index.current.records.values(), {})
    steps = [
        lambda: build_spk(mixed / "new-apl.spk", {"package": "aaa", "version": "1.0-1", "arch": "apollolake",
                                                  "displayname_ita": "Nuovo"}),
        lambda: build_spk(mixed / "web-x64-dsm7.spk", {"package": "web", "version": "2.5-1", "arch": "x86_64"}),
        lambda: (mixed / "tool-dsm7.spk").unlink(),
        lambda: build_spk(mixed / "zz-model.spk", {"package": "zz", "version": "1.0-1", "arch": "noarch",
                                                   "model": "synology_geminilake_920+", "os_max_ver": "7.1-42661"}),
        lambda: (mixed / "arm.spk").unlink(),
    ]
    for step in steps:
        step()
        updated = index.update(sorted(index.walk()) + ["tool-dsm7.spk", "arm.spk"])
        index.fill_md5(index.pending_md5())
        for state in (updated, index.current):
            catalog = Catalog(state.records.values(), {}, previous=catalog)
            whole = Catalog(state.records.values(), {})
            assert [o.record for o in catalog.offers] == [o.record for o in whole.offers]
            assert {k: [o.record for o in v] for k, v in catalog.groups.items() if v} == {
                k: [o.record for o in v] for k, v in whole.groups.items()}
            assert catalog.uses_models == whole.uses_models
            assert whole.languages <= catalog.languages and set(whole.build_steps) <= set(catalog.build_steps)
            for query in (Query(64570, "apollolake", "ita", False, "synology_geminilake_920+"),
                          Query(42661, "rtd1296", "enu", True, ""), Query(25556, "armada38x", "fre", False, "")):
                assert catalog.answer(query, links) == whole.answer(query, links)
