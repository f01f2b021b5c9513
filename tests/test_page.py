"""The web page for people (SPEC 4), through WSGI: what it lists is what the catalog gives that NAS."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import Any, Dict, List, Tuple
from urllib.parse import quote, urlencode

import pytest
import webtest
from conftest import settings
from spkbuilder import build_broken, build_spk

from spklite.app import make_app
from spklite.index import open_index

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


class Page(HTMLParser):
    """The parts of the page a test looks at: package items, rejected files, form, links, messages."""

    def __init__(self, text: str):
        super().__init__()
        self.items: List[Dict[str, str]] = []
        self.rejected: List[str] = []
        self.not_offered: List[Tuple[str, str]] = []  # (file, rule)
        self.summary = ""
        self.messages: List[str] = []
        self.forms: List[Dict[str, Any]] = []
        self.links: List[str] = []
        self.sources: List[str] = []
        self.location = ""
        self._text_into: Any = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        a = dict(attrs)
        if tag == "li" and "data-package" in a:
            self.items.append({"package": a["data-package"], "version": a["data-version"]})
        elif tag == "li" and "data-file" in a:
            self.rejected.append(a["data-file"])
        elif tag == "li" and "data-not-offered" in a:
            self.not_offered.append((a["data-not-offered"], a["data-rule"]))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if "download" in a and self.items:
                self.items[-1]["link"] = a["href"]
        elif tag in ("img", "script", "link", "iframe"):
            self.sources.append(a.get("src") or a.get("href") or "")
        elif tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": []})
        elif tag in ("input", "select") and self.forms:
            self.forms[-1]["fields"].append(a.get("name"))
        if tag == "p" and a.get("class") == "msg":
            self.messages.append("")
            self._text_into = ("messages", -1)
        elif tag == "p" and a.get("class") == "location":
            self._text_into = ("location", None)
        elif tag == "summary":
            self._text_into = ("summary", None)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "summary"):
            self._text_into = None

    def handle_data(self, data: str) -> None:
        if self._text_into == ("location", None):
            self.location += data
        elif self._text_into == ("summary", None):
            self.summary += data
        elif self._text_into:
            self.messages[-1] += data


def page(app: Any, query: str = "", **kw: Any) -> Tuple[Any, Page]:
    res = app.get("/" + ("?" + query if query else ""), headers=HTML, **kw)
    assert res.status_int == 200 and res.content_type == "text/html"
    return res, Page(res.text)


def nas(app: Any, **params: str) -> List[Dict[str, Any]]:
    """What a real NAS gets for these parameters (the JSON catalog answer)."""
    body = json.loads(app.get("/?" + urlencode(params)).body)
    return body["packages"] if isinstance(body, dict) else body


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The app over a folder with packages that different NAS see differently (built once: read-only)."""
    root = tmp_path_factory.mktemp("shelf")
    packages = root / "packages"
    packages.mkdir()
    build_spk(packages / "noarch.spk", {"package": "everywhere", "version": "1.0-1"})
    build_spk(packages / "apollo.spk", {"package": "apollo", "arch": "apollolake", "displayname": "Apollo"})
    build_spk(packages / "x64-1.spk", {"package": "tool", "version": "1.0-1", "arch": "x86_64"})
    build_spk(packages / "x64-2.spk", {"package": "tool", "version": "1.2-1", "arch": "x86_64"})
    build_spk(packages / "x64-beta.spk", {"package": "tool", "version": "2.0-1", "arch": "x86_64", "beta": "yes"})
    build_spk(packages / "arm.spk", {"package": "armonly", "arch": "armv8"})
    build_spk(packages / "dsm6.spk", {"package": "legacy", "os_min_ver": "6.1-15047", "arch": "noarch"})
    build_spk(packages / "918only.spk", {"package": "only918", "model": "synology_apollolake_918+"})
    build_spk(packages / "new.spk", {"package": "future", "os_min_ver": "7.2-72806"})
    build_broken(packages / "broken.spk", "gzip")
    cfg = settings(root / "home", **{"filesystem.packages": str(packages)})
    index = open_index(cfg)
    index.scan()
    return webtest.TestApp(make_app(cfg, index))


# -- the list is the catalog's ------------------------------------------------------


@pytest.mark.parametrize("channel", ["stable", "beta"])
def test_model_page_lists_what_that_nas_gets(shelf, channel):
    app = shelf
    _, p = page(app, urlencode({"model": "DS918+", "dsm": "7.2", "channel": channel}))
    expected = nas(
        app,
        arch="apollolake",
        build="72806",  # 7.2 picked: its newest build
        major="7",
        minor="2",
        package_update_channel=channel,
        unique="synology_apollolake_918+",
    )
    shown = [(i["package"], i["version"], i["link"]) for i in p.items]
    assert shown == [(e["package"], e["version"], e["link"]) for e in expected]
    # Spelled out, so a catalog bug cannot hide behind the comparison.
    tool = "2.0-1" if channel == "beta" else "1.2-1"
    assert shown == [
        ("apollo", "1.0-1", expected[0]["link"]),
        ("everywhere", "1.0-1", expected[1]["link"]),
        ("future", "1.0-1", expected[2]["link"]),
        ("only918", "1.0-1", expected[3]["link"]),
        ("tool", tool, expected[4]["link"]),
    ]


def test_page_json_link_is_the_same_answer(shelf):
    app = shelf
    _, p = page(app, "model=ds918%2B&dsm=6.2&channel=beta")
    json_link = next(link for link in p.links if "arch=" in link)
    body = json.loads(app.get("/" + json_link.lstrip("./")).body)
    assert (
        [(i["package"], i["version"]) for i in p.items]
        == [(e["package"], e["version"]) for e in body["packages"]]
        == [("legacy", "1.0-1")]
    )
    assert "keyrings" in body  # a DSM 6 shaped answer: the page asked as a DSM 6 NAS


def test_platform_instead_of_model(shelf):
    app = shelf
    _, p = page(app, "model=&platform=rtd1296&dsm=7.2.2&channel=stable")
    assert [i["package"] for i in p.items] == ["armonly", "everywhere", "future"]
    assert not p.messages


def test_default_view_shows_newest_of_every_package(shelf):
    app = shelf
    _, p = page(app)
    assert [(i["package"], i["version"]) for i in p.items] == [
        ("apollo", "1.0-1"),
        ("armonly", "1.0-1"),
        ("everywhere", "1.0-1"),
        ("future", "1.0-1"),
        ("legacy", "1.0-1"),
        ("only918", "1.0-1"),
        ("tool", "2.0-1"),
    ]
    assert not p.messages


def test_files_view_lists_every_file_and_the_rejected(shelf):
    app = shelf
    res, p = page(app, "view=files")
    files = json.loads(app.get("/v1/packages").body)
    assert [(i["package"], i["version"], i["link"]) for i in p.items] == [
        (f["package"], f["version"], f["link"]) for f in files
    ]
    assert len(p.items) == 9
    rejected = json.loads(app.get("/v1/rejected").body)
    assert p.rejected == ["broken.spk"] == [r["file"] for r in rejected]
    assert rejected[0]["reason"] in res.text


def test_files_not_offered_to_the_nas_with_the_same_reasons(shelf):
    app = shelf
    res, p = page(app, urlencode({"model": "DS918+", "dsm": "7.2.2", "channel": "stable"}))
    explained = json.loads(app.get("/v1/explain?" + urlencode({"model": "DS918+", "dsm": "7.2.2"})).body)
    left_out = [f for f in explained["files"] if not f["offered"]]
    assert p.not_offered == [(f["file"], f["rule"]) for f in left_out] == [
        ("arm.spk", "platform"), ("dsm6.spk", "dsm6_file"), ("x64-1.spk", "older"), ("x64-beta.spk", "beta"),
        ("broken.spk", "rejected")]
    assert p.summary == "5 files not offered to this NAS, and why"
    text = html.unescape(res.text)
    assert all(f["reason"] in text for f in left_out)
    assert "<details" in res.text  # collapsed, and open without JavaScript
    # Nothing picked: no NAS to explain.
    assert page(app)[1].not_offered == [] and "not offered" not in page(app)[0].text


@pytest.mark.parametrize("query, shown", [
    ("q=tool", [("tool", "2.0-1")]),
    ("q=APOLLO", [("apollo", "1.0-1")]),  # any case
    ("q=demo", [("armonly", "1.0-1"), ("everywhere", "1.0-1"), ("future", "1.0-1"), ("legacy", "1.0-1"),
                ("only918", "1.0-1"), ("tool", "2.0-1")]),  # the display name too: apollo's is "Apollo"
    ("q=tool&view=files", [("tool", "1.0-1"), ("tool", "1.2-1"), ("tool", "2.0-1")]),
    ("q=tool&model=DS918%2B&dsm=7.2&channel=stable", [("tool", "1.2-1")]),
    ("q=nothing-like-it", []),
])
def test_search_box_filters_the_list(shelf, query, shown):
    res, p = page(shelf, query)
    assert [(i["package"], i["version"]) for i in p.items] == shown
    assert not p.messages
    if not shown:
        assert "show all" in res.text


def test_search_keeps_the_nas_picked_and_filters_its_not_offered_list(shelf):
    _, p = page(shelf, "q=tool&model=DS918%2B&dsm=7.2&channel=stable")
    search = p.forms[1]
    assert search["fields"] == ["model", "dsm", "channel", "q"]
    assert p.not_offered == [("x64-1.spk", "older"), ("x64-beta.spk", "beta")]
    assert "./?model=DS918%2B&amp;dsm=7.2&amp;channel=stable" in page(shelf, "q=tool&model=DS918%2B&dsm=7.2&"
                                                                     "channel=stable")[0].text  # show all


# -- the page itself ---------------------------------------------------------------


def test_location_and_how_to(make_client):
    app, _ = make_client()
    res, p = page(app, extra_environ={"HTTP_HOST": "pi.lan:5080"})
    assert p.location == "http://pi.lan:5080/"
    assert "Package Sources" in res.text and "Any publisher" in res.text
    app, _ = make_client(hostname="nas.example.com", scheme="https")
    _, p = page(app, extra_environ={"HTTP_HOST": "pi.lan:5080"})
    assert p.location == "https://nas.example.com/"


@pytest.mark.parametrize("host", ["127.0.0.1:5080", "localhost:5080", "[::1]:5080"])
def test_a_loopback_location_is_flagged_with_addresses_a_nas_can_use(make_client, host):
    from spklite.page import lan_addresses

    app, _ = make_client()
    res, p = page(app, extra_environ={"HTTP_HOST": host})
    assert p.location == f"http://{host}/"
    assert "a NAS\ncannot reach it" in res.text
    shown = re.findall(r'<code class="reachable">([^<]*)</code>', res.text)
    assert shown == [f"http://{address}:5080/" for address in lan_addresses()]
    assert all(not url.startswith(("http://127.", "http://[::1]")) for url in shown)
    if not shown:
        assert "set <code>--hostname</code>" in res.text
    assert "listens on" not in res.text  # the default host, 0.0.0.0, is reachable
    listening_here, _ = make_client(host="127.0.0.1")
    assert "listens on 127.0.0.1 only" in page(listening_here, extra_environ={"HTTP_HOST": host})[0].text
    named, _ = make_client(hostname="nas.lan")
    for app_, environ in ((app, {"HTTP_HOST": "pi.lan:5080"}), (named, {"HTTP_HOST": host})):
        assert "cannot reach it" not in page(app_, extra_environ=environ)[0].text


def test_form_uses_names_a_nas_does_not_send(shelf):
    app = shelf
    _, p = page(app)
    form, search = p.forms
    assert form["method"] == search["method"] == "get"
    assert sorted(form["fields"]) == ["channel", "dsm", "model", "platform"]
    assert search["fields"] == ["q"]
    # The form's query is not a NAS request: without Accept: text/html it is the 400 of SPEC 1.2.
    res = app.get("/?model=DS918%2B&dsm=7.2&channel=stable", status=400)
    assert res.status_int == 400 and res.content_type == "application/json"


def test_no_external_assets_phone_and_dark_mode(shelf):
    app = shelf
    res, p = page(app, extra_environ={"HTTP_HOST": "pi.lan"})
    assert all(src.startswith("http://pi.lan/") for src in p.sources), p.sources
    assert "<script" not in res.text
    assert 'name="viewport"' in res.text and "prefers-color-scheme:dark" in res.text


def test_non_browser_gets_400_json(make_client):
    app, _ = make_client()
    res = app.get("/", headers={"Accept": "application/json"}, status=400)
    assert "arch" in json.loads(res.body)["expected"]
    app.get("/", status=400)


# -- untrusted text -----------------------------------------------------------------


def test_hostile_info_text_is_shown_as_text(packages, make_client):
    build_spk(
        packages / "evil.spk",
        {
            "package": "evil",
            "displayname": '<script>alert("name")</script>',
            "description": "<img src=x onerror=alert(1)> it's \"quoted\" & <script>alert('desc')</script>",
        },
    )
    build_spk(packages / 'q"><img src=x onerror=alert(3)>.spk', {"package": "filename"})
    build_spk(packages / "badversion.spk", {"package": "v", "version": "<script>alert(4)</script>"})
    app, _ = make_client()
    for query in ("", "model=DS918%2B&dsm=7.2", "view=files"):
        res, p = page(app, query)
        assert "<script" not in res.text and "<img src=x" not in res.text
        assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in res.text
        assert "&lt;img src=x onerror=alert(1)&gt; it&#039;s &quot;quoted&quot; &amp;" in res.text
    assert "q&quot;&gt;&lt;img src=x onerror=alert(3)&gt;.spk" in res.text  # file name, files view
    assert p.rejected == ["badversion.spk"]


def test_hostile_form_values_are_escaped(make_client):
    app, _ = make_client()
    res, p = page(app, urlencode({"model": '"><script>alert(1)</script>', "dsm": "<i>", "channel": "stable"}))
    assert "<script" not in res.text and "<i>" not in res.text
    assert any('"><script>' in m for m in p.messages)  # parsed text: it was shown as text


# -- operator help and bad input ----------------------------------------------------------


def test_empty_folder_names_the_folder(make_client, packages, tmp_path):
    app, index = make_client()
    res, p = page(app)
    assert "No packages yet" in res.text and p.items == []
    assert str(packages) in res.text
    assert "restart spklite" in res.text  # make_client's app does not watch the folder
    watched = webtest.TestApp(
        make_app(
            settings(tmp_path / "home", **{"filesystem.packages": str(packages)}), index, watch_mode=lambda: "inotify"
        )
    )
    res, _ = page(watched)
    assert str(packages) in res.text and "by themselves" in res.text and "restart spklite" not in res.text


def test_only_rejected_files_points_to_them(make_client, packages):
    build_broken(packages / "half.spk", "truncated")
    app, _ = make_client()
    res, p = page(app)
    assert str(packages) in res.text and "./?view=files" in p.links


@pytest.mark.parametrize(
    "query, words",
    [
        ("model=DS9999", "Unknown NAS model"),
        ("platform=sparc&dsm=7.2", "Unknown platform"),
        ("model=DS918%2B&dsm=99.1", "Unknown DSM version"),
        ("model=DS918%2B&dsm=7.2&channel=nightly", "Unknown channel"),
        ("view=everything", "Unknown view"),
        ("model=%ff%fe&platform=%00", "Unknown"),
        ("dsm=7.2&channel=stable", "Pick a NAS model or a platform"),
        ("model=" + "x" * 5000, "Unknown NAS model"),
    ],
)
def test_bad_form_values_give_a_message(shelf, query, words):
    app = shelf
    res, p = page(app, query)
    assert any(words in m for m in p.messages), p.messages
    assert p.items  # the page still shows something useful


def test_model_overrides_a_conflicting_platform(shelf):
    app = shelf
    _, p = page(app, "model=DS918%2B&platform=rtd1296&dsm=7.2")
    assert "apollo" in [i["package"] for i in p.items]
    assert any("apollolake" in m for m in p.messages)


def test_post_from_a_browser_gets_the_page(shelf):
    app = shelf
    res = app.post("/", {"model": "DS918+", "dsm": "7.2", "channel": "stable"}, headers=HTML)
    assert [i["package"] for i in Page(res.text).items] == ["apollo", "everywhere", "future", "only918", "tool"]


@pytest.mark.parametrize("dsm, min_ver, label", [("7.2", "7.2-64570", "DSM 7.2+"), ("6.2", "6.2.4-25556", "DSM 6.2+"),
                                                 ("7.2.2", "7.2-72806", "DSM 7.2+")])
def test_a_picked_release_shows_the_packages_labelled_for_it(make_client, packages, dsm, min_ver, label):
    """A release picked on the page means its newest build: a package the page labels "DSM 7.2+" shows
    under 7.2 (7.2 meant 7.2's first build, which hid packages made for its updates)."""
    build_spk(packages / "update.spk", {"package": "update", "os_min_ver": min_ver})
    app, _ = make_client()
    res, p = page(app, urlencode({"model": "DS918+", "dsm": dsm, "channel": "stable"}))
    assert [i["package"] for i in p.items] == ["update"]
    assert label in res.text


@pytest.mark.parametrize("typed, title, unique", [
    ("RS2418RP+", "RS2418RP+ (denverton)", "synology_denverton_rs2418rp+"),
    ("rs2418+", "RS2418+ (denverton)", "synology_denverton_rs2418+"),
    ("RS2418+/RS2418RP+", "RS2418+ (denverton)", "synology_denverton_rs2418+"),
    ("DS918+", "DS918+ (apollolake)", "synology_apollolake_918+"),
])
def test_each_name_of_a_model_works_alone(make_client, typed, title, unique):
    """The reference table names rack models in pairs ("RS2418+/RS2418RP+"): each name is a model."""
    app, _ = make_client()
    res, p = page(app, urlencode({"model": typed}))
    assert not p.messages and title in res.text
    assert "unique=" + quote(unique, safe="") in res.text  # the catalog request the page makes
    options = re.findall(r'<option value="([^"]*)">denverton', res.text)
    assert "RS2418RP+" in options and "RS2418+" in options and not any("/" in o for o in options)


def test_model_alone_means_the_newest_dsm_stable(shelf):
    _, p = page(shelf, "model=918%2B")  # typed without the DS prefix
    assert [(i["package"], i["version"]) for i in p.items] == [
        ("apollo", "1.0-1"),
        ("everywhere", "1.0-1"),
        ("future", "1.0-1"),
        ("only918", "1.0-1"),
        ("tool", "1.2-1"),
    ]
    assert not p.messages


def test_files_view_shows_each_files_warnings(make_client, packages):
    build_spk(packages / "sloppy.spk", {"package": "sloppy", "description": None, "maintainer": None})
    app, index = make_client()
    warnings = index.current.records["sloppy.spk"].package.warnings
    assert warnings  # the reader flags the missing recommended keys (SPEC 2.3)
    res, _ = page(app, "view=files")
    for warning in warnings:
        assert warning in html.unescape(res.text)
    assert "⚠" not in page(app)[0].text  # only the operator's view shows them
