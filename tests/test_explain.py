"""GET /v1/explain: for every file, whether a NAS gets it and the one rule that excluded it (issue 11)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import unquote, urlencode

import pytest
import webtest
from conftest import settings
from spkbuilder import build_broken, build_spk

from spklite.app import make_app
from spklite.index import open_index

DSM72_918 = {"arch": "apollolake", "build": "64570", "major": "7", "minor": "2", "language": "enu",
             "unique": "synology_apollolake_918+", "package_update_channel": "stable"}
DSM62_ARMADA = {"arch": "armada38x", "build": "25556", "major": "6", "minor": "2",
                "unique": "synology_armada38x_ds218j"}
NO_BUILD = {"arch": "apollolake"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file for each rule (its name says which), read-only."""
    packages = tmp_path_factory.mktemp("explain") / "packages"
    packages.mkdir()
    p = packages
    build_spk(p / "offered.spk", {"package": "fine", "version": "2.0-1"})
    build_spk(p / "older.spk", {"package": "fine", "version": "1.0-1"})
    build_spk(p / "tie-a.spk", {"package": "tied", "version": "1.0-1"})
    build_spk(p / "tie-b.spk", {"package": "tied", "version": "1.0-1"})
    build_spk(p / "platform.spk", {"package": "armonly", "arch": "armv8"})
    build_spk(p / "exclude_arch.spk", {"package": "noapollo", "exclude_arch": "apollolake"})
    build_spk(p / "model.spk", {"package": "only920", "model": "synology_geminilake_920+"})
    build_spk(p / "exclude_model.spk", {"package": "not918", "exclude_model": "synology_apollolake_918+"})
    build_spk(p / "min_build.spk", {"package": "future", "os_min_ver": "7.2.2-72806"})
    build_spk(p / "max_build.spk", {"package": "past", "os_max_ver": "7.1-42962"})
    build_spk(p / "dsm6_file.spk", {"package": "legacy", "os_min_ver": "6.2-23739"})
    build_spk(p / "beta.spk", {"package": "preview", "beta": "yes"})
    build_broken(p / "rejected.spk", "gzip")
    return packages


@pytest.fixture(scope="module")
def app(folder: Path) -> Any:
    cfg = settings(folder.parent / "home", **{"filesystem.packages": str(folder)})
    index = open_index(cfg)
    index.scan()
    return webtest.TestApp(make_app(cfg, index))


def explain(app: Any, params: Dict[str, str], status: int = 200) -> Any:
    res = app.get("/v1/explain?" + urlencode(params), status=status)
    assert res.content_type == "application/json"
    return res.json


def by_file(body: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {f["file"]: f for f in body["files"]}


# -- every rule, with the values that decided ---------------------------------------------


@pytest.mark.parametrize("nas, file, rule, words", [
    (DSM72_918, "offered.spk", "offered", ["offered"]),
    (DSM72_918, "older.spk", "older", ["2.0-1", "offered.spk"]),
    (DSM72_918, "tie-a.spk", "offered", ["offered"]),
    (DSM72_918, "tie-b.spk", "tie", ["tie-a.spk", "same version"]),
    (DSM72_918, "platform.spk", "platform", ["armv8", "apollolake", "x86_64", "noarch"]),
    (DSM72_918, "exclude_arch.spk", "exclude_arch", ["exclude_arch", "apollolake"]),
    (DSM72_918, "model.spk", "model", ["synology_geminilake_920+", "synology_apollolake_918+"]),
    (DSM72_918, "exclude_model.spk", "exclude_model", ["exclude_model", "synology_apollolake_918+"]),
    (DSM72_918, "min_build.spk", "min_build", ["72806", "64570"]),
    (DSM72_918, "max_build.spk", "max_build", ["7.1-42962", "64570"]),
    (DSM72_918, "dsm6_file.spk", "dsm6_file", ["6.2-23739", "DSM 7 refuses"]),
    (DSM72_918, "beta.spk", "beta", ["beta", "stable channel"]),
    (DSM72_918, "rejected.spk", "rejected", ["gzip"]),
    (DSM62_ARMADA, "offered.spk", "dsm7_file", ["7.0-40000", "DSM 6"]),
    (DSM62_ARMADA, "dsm6_file.spk", "offered", ["offered"]),
    (NO_BUILD, "offered.spk", "no_build", ["no usable build"]),
])
def test_each_rule_is_named_with_its_reason(app, nas, file, rule, words):
    body = explain(app, nas)
    decision = by_file(body)[file]
    assert decision["rule"] == rule
    assert decision["offered"] is (rule == "offered")
    assert all(word in decision["reason"] for word in words), decision["reason"]
    assert rule in body["rules"] or rule == "offered"


def test_every_file_once_with_counts(app, folder):
    body = explain(app, DSM72_918)
    assert sorted(by_file(body)) == sorted(os.listdir(folder))
    assert (body["offered"], body["not_offered"]) == (2, 11)
    assert body["nas"] == {"platform": "apollolake", "family": "x86_64", "build": 64570, "channel": "stable",
                           "unique": "synology_apollolake_918+", "language": "enu"}
    fine = by_file(body)["offered.spk"]
    assert fine == {"file": "offered.spk", "package": "fine", "version": "2.0-1", "offered": True,
                    "rule": "offered", "reason": fine["reason"]}
    assert by_file(body)["rejected.spk"]["package"] is None


@pytest.mark.parametrize("nas", [
    DSM72_918,
    dict(DSM72_918, package_update_channel="beta"),
    dict(DSM72_918, unique="synology_geminilake_920+", arch="geminilake"),
    DSM62_ARMADA,
    {"arch": "rtd1296", "build": "42661"},
    {"arch": "quantum9000", "major": "7"},
])
def test_offered_files_are_exactly_the_catalog_answer(app, nas):
    answer = app.get("/?" + urlencode(nas)).json
    entries = answer["packages"] if isinstance(answer, dict) else answer
    served = sorted(unquote(e["link"].split("/download/", 1)[1]) for e in entries)
    assert served  # each of these NAS gets something: the comparison is not of two empty lists
    assert sorted(f["file"] for f in explain(app, nas)["files"] if f["offered"]) == served


def test_raw_plus_in_unique_reads_like_the_catalog(app):
    query = "arch=apollolake&build=64570&unique=synology_apollolake_918+"
    decisions = by_file(app.get("/v1/explain?" + query).json)
    assert decisions["exclude_model.spk"]["rule"] == "exclude_model"


# -- which NAS: the catalog's parameters or the page's picker --------------------------------------


def test_the_page_pickers_names_work_too(app):
    body = explain(app, {"model": "DS918+", "dsm": "7.2.2", "channel": "beta"})
    assert body["nas"]["platform"] == "apollolake" and body["nas"]["channel"] == "beta"
    assert body["nas"]["unique"] == "synology_apollolake_918+"
    decisions = by_file(body)
    assert decisions["beta.spk"]["rule"] == "offered"
    assert decisions["min_build.spk"]["rule"] == "offered"  # 7.2.2 is build 72806
    assert decisions["exclude_model.spk"]["rule"] == "exclude_model"
    assert by_file(explain(app, {"platform": "rtd1296", "dsm": "7.2.2"}))["platform.spk"]["rule"] == "offered"


@pytest.mark.parametrize("params, words", [
    ({}, ["arch", "model"]),
    ({"package": "fine"}, ["arch", "model"]),
    ({"model": "DS9999"}, ["DS9999"]),
    ({"platform": "apollolake", "dsm": "1.0"}, ["1.0"]),
])
def test_no_nas_named_is_a_clear_400(app, params, words):
    body = explain(app, params, status=400)
    assert all(word in body["error"] for word in words), body
    assert "arch" in body["expected"] and "model" in body["expected"]


def test_one_package(app):
    body = explain(app, dict(DSM72_918, package="FINE"))
    assert [(f["file"], f["rule"]) for f in body["files"]] == [("offered.spk", "offered"), ("older.spk", "older")]
    assert (body["offered"], body["not_offered"]) == (1, 1)
    # A rejected file has no package id: it is listed when its name holds the one asked about.
    assert [f["file"] for f in explain(app, dict(DSM72_918, package="rejected"))["files"]] == ["rejected.spk"]
    unknown = explain(app, dict(DSM72_918, package="nosuch"))
    assert unknown["files"] == [] and "nosuch" in unknown["note"]


def test_file_names_that_are_not_utf8(packages, make_client):
    name = os.fsdecode(b"caf\xe9.spk")
    build_spk(packages / name, {"package": "cafe", "arch": "armv8"})
    (packages / os.fsdecode(b"broken\xff.spk")).write_bytes(b"junk")
    app, _ = make_client()
    body = explain(app, DSM72_918)
    assert [(f["file"], f["rule"]) for f in body["files"]] == [("caf\\xe9.spk", "platform"),
                                                                ("broken\\xff.spk", "rejected")]


def test_the_debug_package_ends_with_the_same_summary(app, folder, tmp_path):
    cfg = settings(tmp_path / "home", **{"filesystem.packages": str(folder), "debug-package": True})
    index = open_index(cfg)
    index.scan()
    debug_app = webtest.TestApp(make_app(cfg, index))
    entries = debug_app.get("/", DSM72_918).json["packages"]
    debug = [e for e in entries if e["package"] == "spklite-debug"][0]
    lines = debug["desc"].split("<br>")
    assert lines[0] == "What this NAS sent:" and "arch=apollolake" in lines
    not_offered = [f for f in explain(debug_app, DSM72_918)["files"] if not f["offered"]]
    summary = lines[lines.index("2 files offered, 11 not, and why:") + 1:]
    assert [line.split(": ", 1)[0] for line in summary] == [f["file"] for f in not_offered]
    assert lines[-1] == "rejected.spk: compressed tar (gzip) \u2014 SPKs must be uncompressed"


def test_the_debug_summary_is_bounded(packages, make_client):
    for n in range(45):
        build_spk(packages / f"arm{n:02d}.spk", {"package": f"arm{n:02d}", "arch": "armv8"})
    app, _ = make_client(**{"debug-package": True})
    debug = app.get("/", DSM72_918).json["packages"][-1]
    lines: List[str] = debug["desc"].split("<br>")
    assert lines[-1] == "... and 5 more: see /v1/explain with these parameters"
    assert sum(line.startswith("arm") for line in lines) == 40


def test_explain_over_http(run_server, folder):
    server = run_server("--packages", str(folder))
    body = server.json("/v1/explain?" + urlencode(dict(DSM72_918, package="fine")))
    assert [f["rule"] for f in body["files"]] == ["offered", "older"]
