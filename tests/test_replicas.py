"""Replicas (issue 14): several spklite processes behind one load balancer give byte-identical answers.

Real processes on one shared folder (`--watch poll`, as on an NFS mount), one `--hostname`, each with its own
home (cache folder): files are added, replaced, renamed and removed, and once every process has seen the
change (the poll interval, then the md5 of new files) every answer that matters is compared byte for byte,
with its headers. Some processes start cold, some from a snapshot made before the changes, one watches with
inotify. Then: copies of one folder (rsync), unreadable folders met in another order, how soon a new file's md5
shows, an upload under way while another instance starts, and the README's nginx upstream example.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

import pytest
from conftest import Running, free_port, lock, unlock, wait_for
from nginx_process import NGINX, Nginx
from spkbuilder import build_spk, make_png

from spklite.index import printable

HOSTNAME = "pkgs.example.lan"
POLL = "0.2"
SETTLE = 30.0  # seconds for every process to show the folder as it is (poll, then md5)
SAME_TIME = 1_750_000_000_000_000_000  # one mtime (ns) for many files: nothing may hang on mtime order
# Headers that are per request by definition (RFC 9110 6.6.1), not per process.
PER_REQUEST = {"date"}

DSM7_GET = [
    {"arch": "geminilake", "build": "72806", "major": "7", "minor": "2", "language": "enu",
     "unique": "synology_geminilake_920+", "package_update_channel": "stable", "timezone": "Amsterdam"},
    {"arch": "geminilake", "build": "72806", "major": "7", "minor": "2", "language": "fre",
     "unique": "synology_geminilake_920+", "package_update_channel": "beta"},
    {"arch": "rtd1296", "build": "64570", "major": "7", "minor": "1", "language": "enu",
     "unique": "synology_rtd1296_218play", "package_update_channel": "beta"},
    {"arch": "x86_64", "build": "42218", "major": "7", "minor": "0", "language": "ger",
     "unique": "synology_broadwell_3617xs", "package_update_channel": "stable"},
]
DSM6_POST = [
    {"arch": "apollolake", "build": "25426", "major": "6", "minor": "2", "language": "enu",
     "unique": "synology_apollolake_918+", "package_update_channel": "beta"},
    {"arch": "armada38x", "build": "15284", "major": "6", "minor": "1", "language": "fre",
     "unique": "synology_armada38x_216j", "package_update_channel": "stable"},
    {"arch": "x86_64", "build": "5967", "major": "5", "minor": "2", "language": "enu",
     "unique": "synology_cedarview_1512+", "package_update_channel": "stable"},
]
PAGES = ["/", "/?view=files", "/?model=DS920%2B&dsm=7.2&channel=beta", "/?platform=armada38x&dsm=6.2",
         "/?q=alpha", "/?view=files&q=odd"]


def odd(name: bytes) -> str:
    """A relative path given as bytes (not UTF-8, control characters), as the index keys it."""
    return os.fsdecode(name)


def put(folder: Path, rel: str, info: Optional[Dict[str, Any]], *, mtime_ns: Optional[int] = None,
        color: Tuple[int, int, int] = (0x2A, 0x6F, 0xB5), **options: Any) -> Path:
    """A package file built aside and moved in whole (as an upload or rsync does); info None: a broken file."""
    target = folder / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    built = staging / "next.spk"
    if info is None:
        built.write_bytes(b"not a tar archive at all\n" * 40)
    else:
        plain_icon = options.get("icon", True) and not options.get("base64_icon")
        members = {"PACKAGE_ICON.PNG": make_png(72, color)} if plain_icon else {}
        build_spk(built, info, extra_members={**members, **options.pop("extra_members", {})}, **options)
    if mtime_ns is not None:
        os.utime(built, ns=(mtime_ns, mtime_ns))
    os.replace(built, target)
    return target


def populate(folder: Path) -> None:
    """A folder with what keeps a catalog busy, made in an order that is not the names' order."""
    put(folder, "zz-last/epsilon-2.0.spk", {"package": "epsilon", "version": "2.0-1", "arch": "x86_64 geminilake",
                                             "displayname_fre": "Epsilon FR"}, mtime_ns=SAME_TIME)
    put(folder, "epsilon-1.1.spk", {"package": "epsilon", "version": "1.1-1", "arch": "noarch"}, mtime_ns=SAME_TIME)
    put(folder, "epsilon-1.0.spk", {"package": "epsilon", "version": "1.0-1", "arch": "noarch"}, mtime_ns=SAME_TIME)
    put(folder, "apps/alpha-x86.spk", {"package": "alpha", "version": "1.0-1", "arch": "x86_64 geminilake apollolake"},
        icon_256=True, color=(10, 200, 30))
    put(folder, "apps/alpha-arm.spk", {"package": "alpha", "version": "1.0-1", "arch": "armv8 rtd1296 armada38x",
                                       "os_min_ver": "6.1-15047"}, color=(200, 10, 30))
    put(folder, "alpha-any.spk", {"package": "alpha", "version": "0.9-1", "arch": "noarch"}, icon=False)
    put(folder, "beta/gamma-2.0.spk", {"package": "gamma", "version": "2.0-1", "beta": "yes",
                                       "report_url": "https://example.org/bugs"}, screenshots=2)
    put(folder, "gamma-1.0.spk", {"package": "gamma", "version": "1.0-1"})
    put(folder, "dsm6/delta.spk", {"package": "delta", "version": "3.0-1", "os_min_ver": "6.0-7321",
                                   "arch": "noarch", "firmware": "6.0-7321"}, screenshots=3, license=True)
    put(folder, "dsm5/delta-old.spk", {"package": "delta", "version": "2.0-1", "os_min_ver": None,
                                       "firmware": "5.0-4458"})
    # Ties: the same package and version twice, made newest name first, one mtime.
    put(folder, "tie/b.spk", {"package": "tie", "version": "1.0-1", "arch": "noarch"}, mtime_ns=SAME_TIME)
    put(folder, "tie/a.spk", {"package": "tie", "version": "1.0-1", "arch": "noarch"}, mtime_ns=SAME_TIME)
    put(folder, "model.spk", {"package": "only920", "model": "synology_geminilake_920+", "arch": "geminilake"})
    put(folder, odd(b"odd/na\xefve-\xff.spk"), {"package": "naive", "displayname": "Na\u00efve"})
    put(folder, odd(b"odd/line\nbreak \x1b.spk"), {"package": "linebreak"})
    put(folder, "odd/caf\u00e9 \u00fc.spk", {"package": "cafe", "description_fre": "Caf\u00e9 cr\u00e8me"})
    put(folder, "broken.spk", None)
    (folder / "empty.spk").write_bytes(b"")
    # Findings (shown on the page) and an icon given in INFO itself.
    put(folder, "latin.spk", {}, extra_members={"INFO": b'package="latin"\nversion="1.0-1"\narch="noarch"\n'
                                                 b'os_min_ver="7.0-40000"\ndisplayname="Caf\xe9"\nnonsense line\n'})
    put(folder, "inline-icon.spk", {"package": "inline", "version": "1.0-1"}, base64_icon=True, icon_256=True)


def change(folder: Path) -> None:
    """Add, replace (whole, and in place with size and mtime kept), rename, remove, mend and break."""
    put(folder, "zeta.spk", {"package": "zeta", "version": "1.0-1", "arch": "noarch"}, color=(1, 2, 3),
        mtime_ns=SAME_TIME)
    put(folder, "apps/alpha-x86.spk", {"package": "alpha", "version": "1.1-1", "arch": "x86_64 geminilake"},
        icon_256=True, color=(90, 90, 200))
    # `cp -p` over a file: same size, same mtime, other bytes (only the ctime tells).
    target = folder / "epsilon-1.0.spk"
    old = target.stat()
    scratch = folder.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    data = build_spk(scratch / "e.spk", {"package": "epsilon", "version": "1.0-2", "arch": "noarch"}).read_bytes()
    assert len(data) == old.st_size
    with open(target, "r+b") as fh:
        fh.write(data)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.rename(folder / "dsm6/delta.spk", folder / "dsm6/delta-renamed.spk")
    os.rename(folder / "odd", folder / "odd2")
    os.remove(folder / "gamma-1.0.spk")
    os.remove(folder / "tie/a.spk")
    put(folder, "tie/c.spk", {"package": "tie", "version": "1.0-1", "arch": "noarch"}, mtime_ns=SAME_TIME)
    put(folder, "broken.spk", {"package": "mended"})
    put(folder, "model.spk", None)


def change_again(folder: Path) -> None:
    os.rename(folder / "odd2", folder / "odd")
    os.remove(folder / "zz-last/epsilon-2.0.spk")
    put(folder, "beta/gamma-2.1.spk", {"package": "gamma", "version": "2.1-1", "beta": "yes"}, mtime_ns=SAME_TIME)
    put(folder, "model.spk", {"package": "only920", "version": "2.0-1", "model": "synology_geminilake_920+",
                              "arch": "geminilake"}, color=(7, 7, 7))


# -- talking to the processes ---------------------------------------------------------------------------


def ask(server: Any, method: str, path: str, body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers but Date, body) of one request; an error status is an answer too."""
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, found, data = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, found, data = exc.code, exc.headers, exc.read()
    return status, {k: v for k, v in found.items() if k.lower() not in PER_REQUEST}, data


def view(server: Running) -> Tuple[Dict[str, Optional[str]], List[str]]:
    """What a process shows of the folder: {file: md5} of its packages, its rejected files."""
    packages = json.loads(ask(server, "GET", "/v1/packages")[2])
    rejected = json.loads(ask(server, "GET", "/v1/rejected")[2])
    return {p["file"]: p.get("md5") for p in packages}, sorted(r["file"] for r in rejected)


def truth(folder: Path) -> Tuple[Dict[str, Optional[str]], List[str]]:
    """What the folder holds: the files whose first bytes are not a tar are the rejected ones."""
    packages, rejected = {}, []
    for top, _, names in os.walk(folder):
        for name in names:
            full = Path(top, name)
            rel = printable(str(full.relative_to(folder)))
            data = full.read_bytes()
            if data[257:262] == b"ustar":
                packages[rel] = hashlib.md5(data).hexdigest()
            else:
                rejected.append(rel)
    return packages, sorted(rejected)


def settle(servers: List[Running], folder: Path) -> None:
    """Wait until every process shows the folder as it is, md5s included (or fail, bounded)."""
    want = truth(folder)
    deadline = time.monotonic() + SETTLE
    late = servers
    while late and time.monotonic() < deadline:
        late = [s for s in late if view(s) != want]
        if late:
            time.sleep(0.1)
    assert not late, f"not settled after {SETTLE} s: {[view(s) for s in late]} != {want}"


def requests_for(server: Running) -> List[Tuple[str, str, Optional[bytes], Dict[str, str]]]:
    """Every request compared: (method, path, body, headers). URLs found in the answers are asked too."""
    asked: List[Tuple[str, str, Optional[bytes], Dict[str, str]]] = []
    html = {"Accept": "text/html"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for params in DSM7_GET:
        asked.append(("GET", "/?" + urlencode(params), None, {}))
        asked.append(("GET", "/v1/explain?" + urlencode(params), None, {}))
    for params in DSM6_POST:
        asked.append(("POST", "/", urlencode(params).encode(), form))
        asked.append(("GET", "/v1/explain?" + urlencode(params), None, {}))
    p = DSM7_GET[0]
    asked.append(("GET", "/getList/v0/7/2/0/{build}/0/{arch}/beta/{unique}/{language}".format(**p), None, {}))
    asked += [("GET", path, None, {}) for path in (
        "/v1/packages", "/v1/packages?latest=1", "/v1/packages?arch=geminilake", "/v1/packages?name=ALP",
        "/v1/packages?language=fre", "/v1/rejected", "/v1/models?name=920", "/about",
        "/v1/explain?model=DS920%2B&dsm=7.2&channel=beta", "/v1/explain?platform=rtd1296&dsm=7.1&package=alpha",
        "/v1/packages/alpha", "/v1/packages/epsilon", "/v1/packages/nothing.spk")]
    asked += [("GET", page, None, html) for page in PAGES]
    urls = set()
    files = json.loads(ask(server, "GET", "/v1/packages")[2])
    answers = [json.loads(ask(server, "GET", "/?" + urlencode(p))[2])["packages"] for p in DSM7_GET]
    for entry in files + [e for answer in answers for e in answer]:
        urls.update([entry["link"], *entry["thumbnail"], *entry.get("thumbnail_retina", []), *entry["snapshot"]])
    for entry in files:
        asked.append(("GET", "/v1/packages/" + quote(entry["file"]), None, {}))
    for url in sorted(urls):
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("http", HOSTNAME), url
        asked.append(("GET", parts.path, None, {}))
        asked.append(("HEAD", parts.path, None, {}))
        asked.append(("GET", parts.path, None, {"Range": "bytes=100-299"}))
    return asked


def compare(servers: List[Running]) -> int:
    """Ask every process the same questions; every answer must be the same bytes, headers included."""
    asked = requests_for(servers[0])
    ports = [str(s.port) for s in servers]
    differences = []
    for method, path, body, headers in asked:
        answers = [ask(s, method, path, body, headers) for s in servers]
        for server, answer in zip(servers[1:], answers[1:]):
            if answer != answers[0]:
                differences.append(f"{method} {path}: :{server.port} vs :{servers[0].port}: "
                                   + difference(answers[0], answer))
        text = answers[0][2]
        assert not any(f":{port}".encode() in text for port in ports), f"{method} {path}: a process's port"
        assert answers[0][0] != 500, f"{method} {path}"
    assert not differences, f"{len(differences)} of {len(asked)} answers differ:\n" + "\n".join(differences[:12])
    return len(asked)


def difference(one: Tuple[int, Dict[str, str], bytes], other: Tuple[int, Dict[str, str], bytes]) -> str:
    """What differs between two answers, in a line or two."""
    (status, headers, body), (status2, headers2, body2) = one, other
    found = [f"status {status} / {status2}"] if status != status2 else []
    found += [f"{k}: {headers.get(k)!r} / {headers2.get(k)!r}" for k in sorted({*headers, *headers2})
              if headers.get(k) != headers2.get(k)]
    if body != body2:
        at = next((i for i, (x, y) in enumerate(zip(body, body2)) if x != y), min(len(body), len(body2)))
        found.append(f"bodies of {len(body)} and {len(body2)} bytes differ at {at}: "
                     f"{body[max(0, at - 60):at + 60]!r} / {body2[max(0, at - 60):at + 60]!r}")
    return "; ".join(found)


# -- the tests ----------------------------------------------------------------------------------------


def replica(run_server, tmp_path: Path, folder: Path, name: str, *flags: str, watch: str = "poll",
            poll: str = POLL, **options: Any) -> Running:
    """An instance as the README's "Running several instances" runs one: its own home, one --hostname."""
    return run_server("--packages", str(folder), "--watch", watch, "--poll-interval", poll, "--hostname", HOSTNAME,
                      "--no-download-count", *flags, home=tmp_path / name, **options)


def test_replicas_on_one_folder_answer_byte_for_byte(tmp_path, run_server):
    folder = tmp_path / "shared"
    populate(folder)
    a, b = replica(run_server, tmp_path, folder, "a"), replica(run_server, tmp_path, folder, "b")
    settle([a, b], folder)
    assert compare([a, b]) > 100
    asked = {path for _, path, _, _ in requests_for(a)}
    assert {"/static/spklite-default-icon.png", "/download/odd/na%EFve-%FF.spk"} <= asked
    assert a.stop() == 0  # its snapshot is now of the folder before the changes

    change(folder)
    time.sleep(1.1)  # a process started later writes its icons later: no date of its own may show
    # cold, after the changes, and watching with inotify (as on a copy on local disk): how a process learnt of
    # the folder does not show either
    c = replica(run_server, tmp_path, folder, "c", watch="inotify")
    a = replica(run_server, tmp_path, folder, "a")  # warm, from a snapshot older than the changes
    assert json.loads(ask(a, "GET", "/health")[2])["from_snapshot"] > 0
    settle([a, b, c], folder)  # b saw the changes by polling
    compare([a, b, c])

    change_again(folder)
    settle([a, b, c], folder)
    compare([c, b, a])
    assert b.stop() == 0
    b = replica(run_server, tmp_path, folder, "b")  # warm from an up-to-date snapshot
    settle([a, b, c], folder)
    compare([b, c, a])


def test_copies_of_one_folder_answer_alike(tmp_path, run_server):
    """rsync'ed copies (`rsync -a`: same bytes and mtimes, other inodes and ctimes) give the same catalog, API,
    icons and download headers (the page names each copy's own folder)."""
    first = tmp_path / "first"
    populate(first)
    second = tmp_path / "second"
    shutil.copytree(first, second, copy_function=shutil.copy2)
    a, b = replica(run_server, tmp_path, first, "a"), replica(run_server, tmp_path, second, "b")
    settle([a], first)
    settle([b], second)
    for method, path, body, headers in requests_for(a):
        if headers.get("Accept") == "text/html":
            continue
        answers = [ask(s, method, path, body, headers) for s in (a, b)]
        assert answers[0] == answers[1], f"{method} {path}:\n{answers[0][:2]}\n{answers[1][:2]}"


def test_unreadable_folders_are_listed_alike_whatever_each_process_saw_first(tmp_path, run_limited):
    """/v1/rejected lists unreadable folders by name: a process that met one later (a watch event) lists it
    where a process started after it does."""
    folder = tmp_path / "shared"
    put(folder, "ok.spk", {"package": "ok"})
    late, early = tmp_path / "staging" / "a-late", folder / "b-early"
    (late / "locked").mkdir(parents=True)
    early.mkdir()
    try:
        lock(early)
        lock(late / "locked")
        first = run_limited("--packages", str(folder), home=tmp_path / "first")
        os.rename(late, folder / "a-late")  # its unreadable folder is met by the watch, after b-early
        assert wait_for(lambda: len(first.json("/v1/rejected")) == 2)
        second = run_limited("--packages", str(folder), home=tmp_path / "second")
        assert first.get("/v1/rejected")[2] == second.get("/v1/rejected")[2]
        assert [r["file"] for r in second.json("/v1/rejected")] == ["a-late/locked/", "b-early/"]
    finally:
        unlock(early)
        unlock(folder / "a-late" / "locked")


def test_a_new_file_has_its_md5_on_every_replica_soon_after_the_poll(tmp_path, run_server):
    """Until a process has hashed a new file its answers lack the md5 its peers already give: that window is
    the poll interval and the hashing, not a background thread's own rhythm."""
    folder = tmp_path / "shared"
    put(folder, "first.spk", {"package": "first"})
    servers = [replica(run_server, tmp_path, folder, name) for name in ("a", "b")]
    settle(servers, folder)
    for n in range(3):
        time.sleep(0.7 * n)  # another moment of each process's rhythm
        put(folder, f"new-{n}.spk", {"package": f"new{n}"})
        landed = time.monotonic()
        settle(servers, folder)
        assert time.monotonic() - landed < 2.5


def test_an_upload_on_one_instance_survives_another_instance_starting(tmp_path, run_server):
    """Instances on one shared folder all take uploads: one starting (which removes the temporary files its own
    crashed uploads left) leaves alone the file another is receiving, and removes only long abandoned ones."""
    from test_publish import ENTRY, upload

    folder = tmp_path / "shared"
    folder.mkdir()
    (tmp_path / "tmp").mkdir()
    temps = folder / "published"
    data = build_spk(tmp_path / "big.spk", {"package": "big", "arch": "x86_64"},
                     package_tgz=os.urandom(48 << 20)).read_bytes()

    def instance(name: str) -> Running:
        return replica(run_server, tmp_path, folder, name, "--publish-key", ENTRY,
                       env={"TMPDIR": str(tmp_path / "tmp")})

    first = instance("first")
    for _ in range(5):  # caught while it copies the body into the publish folder (else try again)
        for name in os.listdir(temps) if temps.is_dir() else []:
            os.unlink(temps / name)
        result: List[Any] = []
        sender = threading.Thread(target=lambda done=result: done.append(upload(first.port, data)))
        sender.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (temps.is_dir() and os.listdir(temps)) and sender.is_alive():
            time.sleep(0.001)
        first.proc.send_signal(signal.SIGSTOP)
        receiving = os.listdir(temps) if temps.is_dir() else []
        if receiving and receiving[0].startswith("."):
            break
        first.proc.send_signal(signal.SIGCONT)
        sender.join(30)
    else:
        pytest.skip("the upload was never caught while it was being copied")
    abandoned = temps / ".spklite-upload-0123abcd-0123456789abcdef.tmp"  # an instance's, gone two days ago
    abandoned.write_bytes(b"half an upload")
    os.utime(abandoned, (time.time() - 2 * 86400,) * 2)
    try:
        instance("second")
        assert os.listdir(temps) == receiving
    finally:
        first.proc.send_signal(signal.SIGCONT)
    sender.join(60)
    assert result and result[0][0] == 201, result
    assert os.listdir(temps) == ["big_x86_64_1.0-1.spk"]
    assert (temps / "big_x86_64_1.0-1.spk").read_bytes() == data


# -- behind nginx: the README's upstream example ---------------------------------------------------------

def readme_upstream(ports: List[int], port: int) -> str:
    """The nginx example of the README's "Running several instances", its addresses made these loopback ones."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Running several instances", 1)[1].split("\n## ", 1)[0]
    text = section.split("```nginx\n", 1)[1].split("```", 1)[0]
    for example, actual in (("server 10.0.0.11:8080;", f"server 127.0.0.1:{ports[0]};"),
                            ("server 10.0.0.12:8080;", f"server 127.0.0.1:{ports[1]};"),
                            ("listen 80;", f"listen 127.0.0.1:{port};")):
        assert text.count(example) == 1, f"README's nginx example: expected {example!r} once"
        text = text.replace(example, actual)
    return text


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_behind_the_readme_nginx_a_file_one_instance_does_not_know_yet_downloads(tmp_path, run_server):
    folder = tmp_path / "shared"
    put(folder, "first.spk", {"package": "first"})
    quick = replica(run_server, tmp_path, folder, "quick")
    slow = replica(run_server, tmp_path, folder, "slow", poll="600")  # sees the folder as it was at its start
    port = free_port()
    nginx = Nginx(tmp_path / "nginx", readme_upstream([quick.port, slow.port], port), port)
    try:
        front = SimpleNamespace(url=f"http://127.0.0.1:{port}")  # what `ask` needs of a server
        settle([quick, slow], folder)
        for path, accept in (("/?" + urlencode(DSM7_GET[0]), "*/*"), ("/v1/packages", "*/*"), ("/", "text/html")):
            # each instance answers every other request
            answers = [ask(front, "GET", path, headers={"Host": HOSTNAME, "Accept": accept}) for _ in range(4)]
            assert answers[0][0] == 200 and all(answer == answers[0] for answer in answers), path
        late = put(folder, "late.spk", {"package": "late"})
        assert wait_for(lambda: "late.spk" in view(quick)[0])
        assert "late.spk" not in view(slow)[0]
        link = next(p["link"] for p in json.loads(ask(quick, "GET", "/v1/packages")[2]) if p["file"] == "late.spk")
        assert link == f"http://{HOSTNAME}/download/late.spk"
        got = [ask(front, "GET", urlsplit(link).path, headers={"Host": HOSTNAME}) for _ in range(6)]
        assert [status for status, _, _ in got] == [200] * 6  # round robin: every other one asked `slow` first
        assert all(body == late.read_bytes() for _, _, body in got)
    finally:
        nginx.stop()
