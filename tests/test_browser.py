"""The web page in a real browser: headless Chromium against a running spklite (SPEC 4).

Chromium is driven through the DevTools protocol over a pipe
(--remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4), so no
driver binary and no Python package beyond the standard library is needed.
CI installs the browser with `apt-get install -y chromium`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from spkbuilder import build_broken, build_spk, make_png

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]
TIMEOUT = 30.0


class BrowserUnavailable(Exception):
    pass


class Chromium:
    """One headless Chromium, one tab, spoken to with DevTools protocol messages."""

    def __init__(self, binary: str, profile: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The protocol pipe must be fds 3 (commands in) and 4 (answers out) in the child.
        # Moved above 9 first, so that placing one cannot overwrite the other.
        high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)
        to_child_r, from_child_w = high_r, high_w

        def place_pipe() -> None:  # runs in the child, before exec; dup2 targets stay open across exec
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.log = open(profile.parent / "chromium.log", "w+")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=place_pipe,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._events: List[Dict[str, Any]] = []
        self._next_id = 0
        self.session: Optional[str] = None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
        except (BrowserUnavailable, OSError) as exc:
            said = self.output()
            self.close()
            raise BrowserUnavailable(f"{exc}\n{said}") from exc
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")

    # -- the protocol --------------------------------------------------------

    def _read(self, deadline: float) -> Dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise BrowserUnavailable("chromium stopped answering")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise BrowserUnavailable("chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        message: Dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            for i, seen in enumerate(self._events):
                if seen.get("method") == event:
                    del self._events[: i + 1]
                    return
            self._events.append(self._read(deadline))

    # -- what a test does ----------------------------------------------------------

    def load(self, url: str) -> None:
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def viewport(self, width: int, height: int, mobile: bool = False, dark: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        self.call(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}],
        )

    def screenshot(self, path: Path, width: int, mobile: bool = False, dark: bool = False) -> Path:
        """A PNG of the whole page at this width."""
        self.viewport(width, 800, mobile, dark)
        height = int(self.js("document.documentElement.scrollHeight"))
        self.viewport(width, height, mobile, dark)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def output(self) -> str:
        if self.log.closed:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.session = None
                self.call("Browser.close")
            except (BrowserUnavailable, RuntimeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()


@pytest.fixture
def browser(tmp_path: Path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    try:
        chromium = Chromium(binary, tmp_path / "chromium-profile")
    except BrowserUnavailable as exc:
        pytest.skip(f"chromium cannot start here: {exc}")
    yield chromium
    chromium.close()


def test_pick_a_model_through_the_form(browser, run_server, tmp_path):
    packages = tmp_path / "pk"
    packages.mkdir()

    def icon(rgb):
        return {"PACKAGE_ICON.PNG": make_png(72, rgb)}

    build_spk(
        packages / "apollo.spk",
        {
            "package": "apollo",
            "arch": "apollolake",
            "displayname": "Apollo Media",
            "description": "Streams your library to every screen.",
        },
        extra_members=icon((0xE0, 0x6C, 0x2B)),
    )
    build_spk(
        packages / "arm.spk",
        {"package": "armonly", "arch": "armv8", "displayname": "ARM Only"},
        extra_members=icon((0x3A, 0x9A, 0x5B)),
    )
    build_spk(
        packages / "tools.spk",
        {
            "package": "tools",
            "version": "3.1-2",
            "displayname": "Handy Tools",
            "description": "<script>document.title='owned'</script> shown as text",
        },
    )
    build_spk(
        packages / "next.spk",
        {
            "package": "nextgen",
            "arch": "x86_64",
            "version": "0.9-1",
            "beta": "yes",
            "displayname": "Next Gen",
            "description": "A beta package.",
        },
        extra_members=icon((0x6D, 0x4A, 0xD8)),
    )
    build_broken(packages / "broken.spk", "gzip")
    server = run_server("--packages", str(packages), "--watch", "off")

    browser.viewport(1280, 900)
    browser.load(server.url + "/")
    assert browser.js("document.querySelector('.location').textContent") == server.url + "/"
    form = browser.js("""(() => { const f = document.querySelector('form');
        return {action: f.getAttribute('action'), method: f.method,
                fields: [...f.elements].map(e => e.name).filter(Boolean)}; })()""")
    assert form == {"action": "./", "method": "get", "fields": ["model", "platform", "dsm", "channel"]}

    # Type the model like a person, pick DSM and channel, press the button.
    browser.js("document.querySelector('input[name=model]').focus()")
    browser.call("Input.insertText", text="DS918+")
    browser.js("document.querySelector('select[name=dsm]').value = '7.2'")
    browser.js("document.querySelector('select[name=channel]').value = 'beta'")
    browser._events.clear()
    browser.js("document.querySelector('form button[type=submit]').click()")
    browser.wait_for("Page.loadEventFired")

    assert browser.js("location.search") == "?model=DS918%2B&platform=&dsm=7.2&channel=beta"
    names = browser.js("[...document.querySelectorAll('li.pkg h3')].map(h => h.firstChild.textContent.trim())")
    assert names == ["Apollo Media", "Next Gen", "Handy Tools"]
    assert browser.js("document.title") != "owned"  # the hostile description stayed text
    assert "<script>" in browser.js("document.querySelector('li.pkg[data-package=tools] .desc').textContent")
    assert browser.js("[...document.images].every(i => i.complete && i.naturalWidth > 0)")  # icons load
    assert browser.js("document.querySelector('input[name=model]').value") == "DS918+"  # the form remembers

    light = browser.js("getComputedStyle(document.body).backgroundColor")
    desktop = browser.screenshot(tmp_path / "page-desktop.png", 1280)
    phone = browser.screenshot(tmp_path / "page-phone-dark.png", 390, mobile=True, dark=True)
    assert browser.js("getComputedStyle(document.body).backgroundColor") != light
    # On a phone nothing sticks out sideways.
    assert browser.js("document.documentElement.scrollWidth <= window.innerWidth")
    for shot in (desktop, phone):
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 5000

    browser.viewport(1280, 900)
    browser.load(server.url + "/?view=files")
    assert browser.js("[...document.querySelectorAll('.rejected li')].map(li => li.dataset.file)") == ["broken.spk"]
    browser.screenshot(tmp_path / "files-desktop.png", 1280)


def test_files_not_offered_open_and_the_search_box_finds_a_package(browser, run_server, tmp_path):
    packages = tmp_path / "pk"
    packages.mkdir()
    build_spk(packages / "apollo.spk", {"package": "apollo", "arch": "apollolake", "displayname": "Apollo Media"})
    build_spk(packages / "arm.spk", {"package": "armonly", "arch": "armv8", "displayname": "ARM Only"})
    build_spk(packages / "tools.spk", {"package": "tools", "displayname": "Handy Tools"})
    build_broken(packages / "broken.spk", "gzip")
    server = run_server("--packages", str(packages), "--watch", "off")

    browser.viewport(1280, 900)
    browser.load(server.url + "/?model=DS918%2B&dsm=7.2&channel=stable")
    details = "document.querySelector('details.not-offered')"
    assert browser.js(f"{details}.querySelector('summary').textContent") == "2 files not offered to this NAS, and why"
    assert browser.js(f"{details}.open") is False
    assert browser.js(f"{details}.querySelector('li').checkVisibility()") is False  # collapsed
    browser.js(f"{details}.querySelector('summary').click()")
    assert browser.js(f"{details}.open") is True
    assert browser.js(f"{details}.querySelector('li').checkVisibility()") is True
    reasons = browser.js(f"[...{details}.querySelectorAll('li')].map(li => li.dataset.rule)")
    assert reasons == ["platform", "rejected"]
    browser.screenshot(tmp_path / "not-offered.png", 1280)

    # Find a package: the search keeps the NAS picked.
    browser.js("document.querySelector('form.search input[name=q]').focus()")
    browser.call("Input.insertText", text="handy")
    browser._events.clear()
    browser.js("document.querySelector('form.search button').click()")
    browser.wait_for("Page.loadEventFired")
    assert browser.js("location.search") == "?model=DS918%2B&dsm=7.2&channel=stable&q=handy"
    assert browser.js("[...document.querySelectorAll('li.pkg')].map(li => li.dataset.package)") == ["tools"]
    assert browser.js("document.querySelector('form.search input[name=q]').value") == "handy"
    browser.screenshot(tmp_path / "search-phone.png", 390, mobile=True)
    assert browser.js("document.documentElement.scrollWidth <= window.innerWidth")
