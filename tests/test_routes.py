"""Downloads, static files, traversal, and the other routes (SPEC 1.6, 1.7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spkbuilder import build_broken, build_spk


@pytest.fixture
def two(packages: Path):
    (packages / "sub").mkdir()
    a = build_spk(packages / "a.spk", {"package": "alpha", "version": "1.0-1", "displayname": "Alpha One"})
    b = build_spk(packages / "sub" / "b.spk", {"package": "beta-pkg", "version": "2.0-1", "arch": "armv8",
                                               "beta": "yes"})
    a2 = build_spk(packages / "a2.spk", {"package": "alpha", "version": "1.1-1"})
    build_broken(packages / "bad.spk", "truncated")
    (packages / "notes.txt").write_text("not a package")
    (packages / ".hidden.spk").write_bytes(a.read_bytes())
    return a, b, a2


# -- downloads ---------------------------------------------------------------------


def test_download_whole_file_and_headers(two, make_client):
    a, _, _ = two
    app, _ = make_client()
    res = app.get("/download/a.spk")
    assert res.body == a.read_bytes()
    assert res.headers["Content-Type"] == "application/octet-stream"
    assert res.headers["ETag"].startswith('"') and res.headers["ETag"].endswith('"')
    assert res.headers["Last-Modified"] and res.headers["Accept-Ranges"] == "bytes"
    head = app.head("/download/a.spk")
    assert head.body == b"" and int(head.headers["Content-Length"]) == a.stat().st_size


def test_download_range_and_conditional(two, make_client):
    a, _, _ = two
    app, _ = make_client()
    data = a.read_bytes()
    part = app.get("/download/a.spk", headers={"Range": "bytes=10-19"}, status=206)
    assert part.body == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = app.get("/download/a.spk", headers={"Range": "bytes=-5"}, status=206)
    assert tail.body == data[-5:]
    app.get("/download/a.spk", headers={"Range": f"bytes={len(data) + 10}-"}, status=416)
    etag = app.get("/download/a.spk").headers["ETag"]
    app.get("/download/a.spk", headers={"If-None-Match": etag}, status=304)
    last = app.get("/download/a.spk").headers["Last-Modified"]
    app.get("/download/a.spk", headers={"If-Modified-Since": last}, status=304)


def test_etag_changes_when_replaced_by_an_older_copy(packages, make_client, tmp_path):
    path = build_spk(packages / "a.spk", {"package": "a", "version": "2.0-1"})
    app, index = make_client()
    etag = app.get("/download/a.spk").headers["ETag"]
    last = app.get("/download/a.spk").headers["Last-Modified"]
    older = build_spk(tmp_path / "old.spk", {"package": "a", "version": "1.0-1"})
    os.utime(older, ns=(10**18, 10**18))
    os.replace(older, path)
    index.scan()
    res = app.get("/download/a.spk", headers={"If-None-Match": etag, "If-Modified-Since": last})
    assert res.status_int == 200 and res.headers["ETag"] != etag
    assert res.body == path.read_bytes()


def test_only_indexed_packages_are_downloadable(two, make_client, tmp_path):
    (tmp_path / "secret.txt").write_text("SECRET")
    app, _ = make_client()
    assert app.get("/download/sub/b.spk").status_int == 200
    for path in ("/download/notes.txt", "/download/bad.spk", "/download/.hidden.spk", "/download/",
                 "/download/sub", "/download/sub/", "/download/../secret.txt",
                 "/download/%2e%2e/secret.txt", "/download/%252e%252e/secret.txt",
                 "/download/sub/..%2fa.spk", "/download//etc/passwd", "/download/a.spk%00",
                 "/download/" + str(tmp_path / "secret.txt"), "/static/../packages/a.spk",
                 "/static/%2e%2e%2fsecret.txt", "/static/", "/static/index.json"):
        res = app.get(path, status="*", expect_errors=True)
        assert res.status_int in (400, 404), path
        assert b"SECRET" not in res.body
        assert res.content_type == "application/json", path


def test_symlink_out_of_the_folder_is_rejected(packages, make_client, tmp_path):
    outside = build_spk(tmp_path / "outside.spk", {"package": "outside"})
    (packages / "link.spk").symlink_to(outside)
    inside = build_spk(packages / "in.spk", {"package": "inside"})
    (packages / "inlink.spk").symlink_to(inside)
    app, _ = make_client()
    app.get("/download/link.spk", status=404)
    reasons = {r["file"]: r["reason"] for r in app.get("/v1/rejected").json}
    assert "outside the packages folder" in reasons["link.spk"]
    assert app.get("/download/inlink.spk").body == inside.read_bytes()
    followed, _ = make_client(**{"follow-symlinks": True})
    assert followed.get("/download/link.spk").body == outside.read_bytes()


def test_icons_answer_conditional_requests_with_a_quoted_etag(two, make_client):
    app, index = make_client()
    name = index.current.records["a.spk"].package.icon
    res = app.get("/static/" + name)
    etag = res.headers["ETag"]
    assert etag == '"%s"' % name.partition(".")[0] and "immutable" in res.headers["Cache-Control"]
    for sent in (etag, "W/" + etag, f'"other", {etag}', "*"):
        assert app.get("/static/" + name, headers={"If-None-Match": sent}, status=304).headers["ETag"] == etag
    future = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert app.get("/static/" + name, headers={"If-None-Match": '"other"', "If-Modified-Since": future},
                   status=200).body == res.body


def test_static_blobs_only(two, make_client):
    app, index = make_client()
    names = os.listdir(index.blob_dir)
    assert names
    for name in names:
        res = app.get("/static/" + name)
        assert res.content_type == "image/png" and "max-age" in res.headers["Cache-Control"]
    assert app.get("/static/spklite-default-icon.png").body.startswith(b"\x89PNG")
    app.get("/static/" + "0" * 32 + ".png", status=404)


def test_custom_prefixes(two, make_client):
    app, _ = make_client(**{"router.download": "files", "router.static": "/img"})
    link = app.get("/", {"arch": "apollolake", "build": "42661"}).json["packages"][0]["link"]
    assert "/files/a2.spk" in link
    assert app.get("/files/a2.spk").status_int == 200
    app.get("/download/a2.spk", status=404)


# -- the JSON API ----------------------------------------------------------------------


def test_v1_packages_lists_every_file(two, make_client):
    app, _ = make_client()
    files = app.get("/v1/packages").json
    assert [f["file"] for f in files] == ["a.spk", "a2.spk", "sub/b.spk"]
    b = files[2]
    assert b["arch"] == "armv8" and b["beta"] is True and b["os_min_ver"] == "7.0-40000"
    assert b["os_max_ver"] == "" and b["link"].endswith("/download/sub/b.spk")
    assert app.get("/v1/packages").headers["Access-Control-Allow-Origin"] == "*"


def test_v1_packages_filters(two, make_client):
    app, _ = make_client()
    assert [f["file"] for f in app.get("/v1/packages?arch=apollolake").json] == ["a.spk", "a2.spk"]
    assert [f["file"] for f in app.get("/v1/packages?arch=rtd1296").json] == ["a.spk", "a2.spk", "sub/b.spk"]
    assert [f["file"] for f in app.get("/v1/packages?name=ONE").json] == ["a.spk"]
    assert [f["file"] for f in app.get("/v1/packages?name=beta").json] == ["sub/b.spk"]
    assert [f["file"] for f in app.get("/v1/packages?latest=true").json] == ["a2.spk", "sub/b.spk"]
    assert app.get("/v1/packages?name=nothing-like-it").json == []


def test_v1_package_by_file_or_id(two, make_client):
    app, _ = make_client()
    assert app.get("/v1/packages/sub/b.spk").json["package"] == "beta-pkg"
    assert [f["version"] for f in app.get("/v1/packages/alpha").json] == ["1.0-1", "1.1-1"]
    assert "error" in app.get("/v1/packages/nope", status=404).json
    assert "error" in app.get("/v1/packages/nope.spk", status=404).json


def test_empty_folder_lists_are_empty_not_404(make_client):
    app, _ = make_client()
    assert app.get("/v1/packages").json == []
    assert app.get("/v1/rejected").json == []


def test_models(make_client):
    app, _ = make_client()
    models = app.get("/v1/models").json
    assert len(models) > 200
    ds918 = [m for m in models if m["model"] == "DS918+"]
    assert ds918 and ds918[0]["platform"] == "apollolake" and ds918[0]["family"] == "x86_64"
    assert all("918" in m["model"] for m in app.get("/v1/models?name=918").json)


def test_about_health_rejected(two, make_client):
    app, _ = make_client()
    about = app.get("/about").json
    assert about["name"] == "spklite" and about["version"] and about["license"]
    health = app.get("/health").json
    assert (health["status"], health["packages"], health["rejected"]) == ("ok", 3, 1)
    rejected = app.get("/v1/rejected").json
    assert [r["file"] for r in rejected] == ["bad.spk"] and "truncated" in rejected[0]["reason"]


def test_cors_preflight(make_client):
    app, _ = make_client()
    res = app.options("/v1/packages")
    assert res.status_int in (200, 204)
    assert res.headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_routes_and_methods_are_json(make_client):
    app, _ = make_client()
    assert "error" in app.get("/nope", status=404).json
    res = app.delete("/v1/packages", status=405)
    assert res.content_type == "application/json"
    res = app.put("/", status=405)
    assert "Traceback" not in res.text


def test_a_browser_gets_a_page_for_an_unknown_path(make_client):
    app, _ = make_client()
    res = app.get("/nope<b>", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, status=404)
    assert res.content_type == "text/html"
    assert "404" in res.text and "<b>" not in res.text and 'href="/"' in res.text


def test_operator_models_file_and_a_foreign_one(make_client, tmp_path):
    mine = tmp_path / "mine.yml"
    mine.write_text("- {model: DS-HOME, platform: apollolake, family: x86_64}\n")
    app, _ = make_client(**{"filesystem.models": str(mine)})
    assert app.get("/v1/models").json == [{"model": "DS-HOME", "platform": "apollolake", "family": "x86_64"}]
    foreign = tmp_path / "gosspks-models.yml"
    foreign.write_text("models:\n  DS918+: {arch: apollolake}\n")
    app, _ = make_client(**{"filesystem.models": str(foreign)})
    assert len(app.get("/v1/models").json) > 200  # the bundled list, not a crash


def test_icons_fall_back_to_the_default_when_the_cache_is_unwritable(packages, make_client, tmp_path):
    build_spk(packages / "a.spk", {"package": "a"}, icon=True)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    app, index = make_client(**{"filesystem.cache": str(blocker / "cache")})
    assert index.cache_error and app.get("/health").json["cache_error"]
    icon_url = app.get("/", {"arch": "apollolake", "build": "42661"}).json["packages"][0]["thumbnail"][0]
    icon = app.get(icon_url.split("localhost:80", 1)[-1])
    assert icon.body == app.get("/static/spklite-default-icon.png").body


def test_a_file_replaced_since_indexing_is_never_served_half_right(packages, make_client, tmp_path):
    path = build_spk(packages / "a.spk", {"package": "a", "version": "1.0-1"})
    app, index = make_client()
    newer = build_spk(tmp_path / "newer.spk", {"package": "a", "version": "2.0-1"}, package_tgz=b"x" * 5000)
    os.replace(newer, path)  # the index has not seen it yet: the download looks again, serves what is there
    res = app.get("/download/a.spk")
    assert res.body == path.read_bytes() and int(res.headers["Content-Length"]) == path.stat().st_size
    assert index.current.records["a.spk"].package.info["version"] == "2.0-1"  # and the index knows it now
    os.unlink(path)
    app.get("/download/a.spk", status=404)


def test_conditional_requests_follow_rfc_9110(two, make_client):
    app, _ = make_client()
    etag = app.get("/download/a.spk").headers["ETag"]
    app.get("/download/a.spk", headers={"If-None-Match": f'"other", {etag}'}, status=304)
    app.get("/download/a.spk", headers={"If-None-Match": "*"}, status=304)
    app.get("/download/a.spk", headers={"If-None-Match": '"other"',
                                        "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, status=200)
    res = app.get("/download/a.spk", headers={"Range": "bytes=5-"}, status=206)
    assert res.body == (app.get("/download/a.spk").body)[5:]
    assert app.get("/download/a.spk", headers={"Range": "bytes=999999-"}, status=416).headers[
        "Content-Range"].startswith("bytes */")
