"""`spklite mirror URL`: another package source's files, for chosen NAS units, copied into a folder spklite serves.

The source's catalog is asked exactly as those NAS units ask it (doctor.catalog_request: the same parameters,
GET or POST, `unique`); the files all their answers offer are merged by link and downloaded into the mirror
folder, each checked against the catalog's `size` and `md5`. A download is written to a hidden `.NAME.part`
(the index ignores it) and renamed when complete and verified: the index never sees half a file. An interrupted
download resumes from its part with Range and If-Range. A small state file remembers each file's md5 by its
size and mtime, so a second run reads nothing it already has. Nothing is removed unless --delete.
Only the standard library's HTTP client talks to the source (doctor.Client: timeouts, no proxy, redirects).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse
from collections import namedtuple

from spklite import __version__, config, doctor, synology
from spklite.config import ConfigError
from spklite.doctor import Client, Failure, Profile, megabytes, plural
from spklite.index import atomic_write, printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO

TIMEOUT = 30.0  # seconds a socket may wait for the source
CHUNK = 1 << 16
MAX_UNSIZED = 8 << 30  # bytes at most of a file whose size the catalog does not give
STATE = ".spklite-mirror.json"  # hidden: neither the index nor --delete looks at it
LOCK = ".spklite-mirror.lock"
CHANNELS = ("stable", "beta")
AGENT = f"spklite/{__version__} (mirror)"  # downloads say who fetches; catalog requests are the NAS's own
RELEASES = {f"{major}.{minor}": build for (major, minor), build in synology.NEWEST_BUILDS}
NEWEST_RELEASE = next(iter(RELEASES))

Wanted = namedtuple("Wanted", "name link size md5")  # one offered file: where it goes, where it comes from


# What to ask ################################################################################################


def profiles(
    models: list[str], platforms: list[str], releases: list[str], channels: list[str], known: list[dict[str, Any]]
) -> list[tuple[Profile, str, str]]:
    """(profile, channel, unique) of each NAS unit to ask as; ConfigError names a value that cannot be used."""
    from spklite.page import PLATFORMS, find_model, unique_of  # the page's model rules: `unique` as a NAS sends it

    units: list[tuple[str, str, str]] = []  # (platform, model, unique)
    for typed in models:
        found = find_model(known, typed)
        if found is None:
            raise ConfigError(f"mirror: unknown NAS model '{typed}' (see /v1/models, or give --platform)")
        model, name = found
        platform = synology.normalize_platform(str(model["platform"]))
        units.append((platform, name, unique_of(name, platform)))
    for typed in platforms:
        chosen = PLATFORMS if typed.strip().lower() == "all" else (synology.normalize_platform(typed),)
        for platform in chosen:
            if platform not in PLATFORMS:
                raise ConfigError(f"mirror: unknown platform '{typed}' (known: {' '.join(PLATFORMS)}, or all)")
            units.append((platform, "", ""))  # no model: files limited to some models are not asked for
    if not units:
        raise ConfigError("mirror: name the NAS units to mirror for: --model DS920+ or --platform geminilake")
    builds = []
    for typed in releases or [NEWEST_RELEASE]:
        release = ".".join(typed.strip().split(".")[:2])  # 7.2.2 is release 7.2: its newest build
        if release not in RELEASES:
            raise ConfigError(f"mirror: unknown DSM version '{typed}' (known: {' '.join(RELEASES)})")
        builds.append(RELEASES[release])
    asked = []
    for build in dict.fromkeys(builds):
        dsm = ".".join(map(str, synology.dsm_version_of_build(build)))
        for platform, model_name, unique in dict.fromkeys(units):
            for channel in dict.fromkeys(channels or ["stable"]):
                asked.append((Profile(dsm, build, platform, model_name), channel, unique))
    return asked


def fetch_offers(client: Client, url: str, asked: list[tuple[Profile, str, str]]) -> tuple[list[dict], list[str]]:
    """Every entry the source offers these units, and what went wrong asking (one line per unit). A source
    that cannot be reached at all is a Failure."""
    entries: list[dict] = []
    problems: list[str] = []
    for profile, channel, unique in asked:
        request_url, body, headers = doctor.catalog_request(url, profile, channel, unique)
        who = f"DSM {profile.dsm}-{profile.build} {unique or profile.platform} {channel}"
        try:
            with client.open(request_url, "POST" if body else "GET", body, headers) as response:
                data = b"".join(client.read(response, doctor.MAX_CATALOG))
            if len(data) > doctor.MAX_CATALOG:
                raise Failure(f"answer larger than {megabytes(doctor.MAX_CATALOG)}")
            found = doctor.parse_catalog(data, profile.build)
        except Failure as exc:
            if not exc.reachable and not entries and not problems:
                raise Failure(f"cannot reach {url}: {exc}", reachable=False) from None
            problems.append(f"{who}: {exc}")
            continue
        except ValueError as exc:
            problems.append(f"{who}: the answer is {exc}")
            continue
        entries += [entry for entry in found if isinstance(entry, dict)]
    return entries, problems


def plan(url: str, entries: Iterable[dict]) -> tuple[list[Wanted], list[str]]:
    """The files to have, one per link (the units' answers merged), each with a file name of its own; and the
    entries that cannot be mirrored, in words."""
    by_link: dict[str, tuple[Any, Any, str]] = {}
    problems: list[str] = []
    for entry in entries:
        link = entry.get("link")
        name = entry.get("package")
        if not isinstance(link, str) or urllib.parse.urlsplit(urllib.parse.urljoin(url, link)).scheme not in (
            "http",
            "https",
        ):
            problems.append(f"{printable(str(name))}: no http(s) link ({printable(repr(link))[:200]})")
            continue
        link = urllib.parse.urljoin(url, link)
        size, md5 = entry.get("size"), entry.get("md5")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = None
        md5 = md5.lower() if isinstance(md5, str) and doctor.MD5.fullmatch(md5) else None
        claim = (size, md5, file_name(link, entry))
        if by_link.setdefault(link, claim)[:2] != claim[:2]:
            problems.append(f"{printable(link)}: a different size or md5 for different NAS units")
    wanted, taken = [], set()
    for link, (size, md5, name) in sorted(by_link.items()):
        if name.lower() in taken:  # two links, one name: the later one (by link) is told apart by its md5 or link
            stem = name[: -len(".spk")]
            name = f"{stem}-{md5[:8] if md5 else hashlib.sha256(link.encode()).hexdigest()[:8]}.spk"
        taken.add(name.lower())
        wanted.append(Wanted(name, link, size, md5))
    return wanted, problems


def file_name(link: str, entry: dict) -> str:
    """The local name of a link: its last path segment decoded, made safe (no folders, no control or hidden
    names, at most 200 bytes) and ending in .spk, the index's name rule; else `<package>-<version>.spk`."""

    def clean(text: str) -> str:
        text = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in text)
        return text.lstrip(". ").rstrip()

    segment = clean(urllib.parse.unquote(urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1], errors="replace"))
    if not segment.lower().endswith(".spk") or segment.lower() == ".spk":
        segment = clean(f"{entry.get('package', 'package')}-{entry.get('version', '')}".strip("-")) + ".spk"
    while len(segment.encode()) > 200:
        segment = segment[:-5].rstrip() + ".spk"  # a valid name of at most NAME_MAX, still ending in .spk
    return segment if segment != ".spk" else "package.spk"


# Doing it ###################################################################################################


class Progress:
    """Files, bytes and rate on one line of a terminal, rewritten at most 5 times a second; nothing otherwise."""

    def __init__(self, out: TextIO | None, files: int, total: int):
        self.out, self.files, self.total = out, files, total
        self.done = self.got = 0
        self.started = self.shown = time.monotonic()

    def add(self, count: int) -> None:
        self.got += count
        if self.out and time.monotonic() - self.shown > 0.2:
            self.show()

    def show(self) -> None:
        if not self.out:
            return
        self.shown = time.monotonic()
        rate = int(self.got / max(self.shown - self.started, 1e-3))
        total = f"/{megabytes(self.total)}" if self.total else ""
        self.out.write(f"\r\x1b[K{self.done}/{self.files} files, {megabytes(self.got)}{total}, {megabytes(rate)}/s")
        self.out.flush()

    def say(self, text: str) -> None:
        """A line above the progress line (or alone when there is none)."""
        if self.out:
            self.out.write("\r\x1b[K")
        sys.stderr.write(text + "\n")
        self.show()

    def end(self) -> None:
        if self.out:
            self.out.write("\r\x1b[K")
            self.out.flush()


class Mirror:
    """The mirror folder and its state: {"files": {name: {link, size, mtime_ns, md5}}, "parts": {name: {link,
    validator}}} - the md5 of each file as it was last seen, and what each kept partial download was."""

    def __init__(self, folder: str, client: Client):
        self.folder, self.client = folder, client
        self.progress = Progress(None, 0, 0)
        self.state: dict[str, dict[str, Any]] = {"files": {}, "parts": {}}
        try:
            with open(os.path.join(folder, STATE), encoding="utf-8") as fh:
                loaded = json.load(fh)
            if all(isinstance(loaded.get(key), dict) for key in self.state):
                self.state = {key: loaded[key] for key in self.state}
        except (OSError, ValueError, AttributeError):
            pass  # none yet, or unreadable: md5s are computed again, partial downloads start over

    def save(self) -> None:
        atomic_write(os.path.join(self.folder, STATE), json.dumps(self.state, sort_keys=True).encode())

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def part(self, name: str) -> str:
        return os.path.join(self.folder, f".{name}.part")  # hidden and .part: twice ignored by the index

    def has(self, want: Wanted) -> bool:
        """Whether the file is here as offered: its size, and its md5 (read once per size and mtime)."""
        try:
            st = os.stat(self.path(want.name))
        except OSError:
            return False
        if want.size is not None and st.st_size != want.size:
            return False
        if want.md5 is None:
            return True
        known = self.state["files"].get(want.name) or {}
        if known.get("size") != st.st_size or known.get("mtime_ns") != st.st_mtime_ns or not known.get("md5"):
            try:
                with open(self.path(want.name), "rb") as fh:
                    known = self.remember(want, st, md5_of(fh))
            except OSError:
                return False  # unreadable: fetched again and replaced
        return known["md5"] == want.md5

    def remember(self, want: Wanted, st: os.stat_result, md5: str) -> dict[str, Any]:
        known = {"link": want.link, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
        self.state["files"][want.name] = known
        return known

    def fetch(self, want: Wanted) -> str:
        """Download one file into place; "" when done, else why not (a kept part resumes next time)."""
        part = self.part(want.name)
        kept = self.state["parts"].get(want.name) or {}
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        # Resume only the same link, and only when the result can be checked: an If-Range validator, or an md5.
        if kept.get("link") != want.link or not (kept.get("validator") or want.md5):
            offset = 0
        if offset and want.size is not None and offset >= want.size:
            offset = 0  # nothing left to ask for: a complete part that failed its check, or too long
        headers = {"User-Agent": AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
        if offset and kept.get("validator"):
            headers["If-Range"] = kept["validator"]
        try:
            response = self.client.open(want.link, headers=headers)
        except Failure as exc:
            if exc.status == 416:
                remove(part)  # the part does not fit what the source has now: start over next time
            return str(exc)
        with response:
            if response.status != 206 or not content_range_starts(response.headers.get("Content-Range"), offset):
                offset = 0  # a 200: the whole file (If-Range found another version, or no Range support)
            etag = response.headers.get("ETag") or ""
            validator = etag if etag.startswith('"') else response.headers.get("Last-Modified") or ""
            self.state["parts"][want.name] = {"link": want.link, "validator": validator}
            self.save()  # before the bytes: a run killed mid-file still resumes the right version
            return self.receive(want, response, part, offset)

    def receive(self, want: Wanted, response: Any, part: str, offset: int) -> str:
        digest = hashlib.md5(usedforsecurity=False)  # usedforsecurity: FIPS builds allow md5 for checksums
        limit = MAX_UNSIZED if want.size is None else want.size
        try:
            with open(part, "r+b" if offset else "wb") as fh:
                if offset:
                    md5_of(fh, digest, offset)
                    fh.truncate(offset)
                got = offset
                while got <= limit:
                    try:
                        chunk = response.read1(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        return f"interrupted after {got} bytes ({doctor.reason_text(exc)}): the next run resumes"
                    if not chunk:
                        if getattr(response, "length", None):  # http.client ends a cut-off body quietly
                            return f"interrupted after {got} bytes (the connection closed): the next run resumes"
                        break
                    fh.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    self.progress.add(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            remove(part)
            return f"cannot write {printable(part)}: {exc.strerror or exc}"
        problem = ""
        if want.size is not None and got != want.size:
            problem = f"{'more than' if got > want.size else 'only'} {got} bytes, the catalog says {want.size}"
        elif got > limit:
            problem = f"larger than {megabytes(limit)} and no size in the catalog"
        elif want.md5 and digest.hexdigest() != want.md5:
            problem = f"md5 {digest.hexdigest()}, the catalog says {want.md5}"
        del self.state["parts"][want.name]
        if problem:
            remove(part)
            return problem + ": refused"
        os.replace(part, self.path(want.name))
        self.remember(want, os.stat(self.path(want.name)), digest.hexdigest())
        return ""

    def unoffered(self, wanted: list[Wanted]) -> list[str]:
        """Package files in the mirror folder (not below it) that no link offers, and stale parts."""
        keep = {want.name for want in wanted} | {f".{want.name}.part" for want in wanted}
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                ours = entry.name.lower().endswith(".spk") or (
                    entry.name.startswith(".") and entry.name.endswith(".spk.part")
                )
                if ours and entry.name not in keep and entry.is_file(follow_symlinks=False):
                    found.append(entry.name)
        return sorted(found)


def md5_of(fh: Any, digest: Any = None, length: int = -1) -> str:
    """The md5 of an open file's first `length` bytes (all: -1), read from its start in chunks."""
    digest = digest or hashlib.md5(usedforsecurity=False)
    fh.seek(0)
    left = length
    while left:
        chunk = fh.read(CHUNK if left < 0 else min(CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk) if left > 0 else 0
    return str(digest.hexdigest())


def content_range_starts(header: str | None, offset: int) -> bool:
    """Whether a 206's Content-Range (`bytes START-END/SIZE`) starts where the kept part ends."""
    unit, _, spec = (header or "").partition(" ")
    start = spec.partition("-")[0]
    return unit.strip().lower() == "bytes" and start.isdigit() and int(start) == offset


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# The command ################################################################################################


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the package source, as typed into Package Center")
    parser.add_argument("--model", action="append", default=[], metavar="MODEL",
                        help="ask as this NAS model (e.g. DS920+; repeatable)")
    parser.add_argument("--platform", action="append", default=[], metavar="PLATFORM",
                        help="ask as a NAS of this platform (e.g. geminilake; `all`: every known one; repeatable)")
    parser.add_argument("--dsm", action="append", default=[], metavar="X.Y",
                        help=f"ask as this DSM release, its newest build (repeatable; default: {NEWEST_RELEASE})")
    parser.add_argument("--channel", action="append", default=[], choices=CHANNELS,
                        help="the update channel asked for (repeatable; default: stable)")
    parser.add_argument("--into", metavar="FOLDER", help="the mirror folder (default: <packages>/mirror/<host>)")
    parser.add_argument("--delete", action="store_true",
                        help="remove package files of the mirror folder that the source no longer offers")
    parser.add_argument("--timeout", type=config.duration(0.1, 3600).parse, default=TIMEOUT, metavar="DURATION",
                        help=f"how long each request may wait (default: {TIMEOUT:g}s)")


def default_folder(packages: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "source").replace(":", "_")  # an IPv6 literal: no colons in a folder name
    return os.path.join(packages, "mirror", host + (f"-{parts.port}" if parts.port else ""))


def mirror_command(namespace: argparse.Namespace, load_config: Callable[[], dict[str, Any]]) -> int:
    from spklite.app import load_models

    url = doctor.source_url(namespace.url, "mirror")
    cfg = load_config()
    asked = profiles(namespace.model, namespace.platform, namespace.dsm, namespace.channel,
                     load_models(cfg["filesystem.models"]) if namespace.model else [])
    folder = namespace.into or default_folder(cfg["filesystem.packages"], url)
    return mirror(url, asked, folder, namespace.delete, namespace.timeout, sys.stdout)


def mirror(url: str, asked: list[tuple[Profile, str, str]], folder: str, delete: bool, timeout: float,
           out: TextIO) -> int:
    """Bring the folder in line with what the source offers these units; exit status 1 when anything failed."""
    shown = printable(url)
    try:
        os.makedirs(folder, exist_ok=True)
        lock = open(os.path.join(folder, LOCK), "a")  # noqa: SIM115  # held until the process ends
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        busy = isinstance(exc, BlockingIOError)
        why = "another mirror run is using it" if busy else exc.strerror or str(exc)
        print(f"spklite: mirror: {printable(folder)}: {why}", file=sys.stderr)
        return 1
    client = Client(timeout)
    try:
        entries, problems = fetch_offers(client, url, asked)
    except Failure as exc:
        print(f"spklite: mirror: {printable(str(exc))}", file=sys.stderr)
        return 1
    wanted, bad = plan(url, entries)
    failed = problems + bad
    for text in failed:
        print(f"spklite: mirror: {text}", file=sys.stderr)
    store = Mirror(folder, client)
    present: list[Wanted] = []
    missing: list[Wanted] = []
    for want in wanted:
        (present if store.has(want) else missing).append(want)
    terminal = sys.stderr if sys.stderr.isatty() else None
    progress = store.progress = Progress(terminal, len(wanted), sum(want.size or 0 for want in missing))
    progress.done = len(present)
    copied = 0
    for want in missing:
        why = store.fetch(want)
        if why:
            failed.append(why)
            progress.say(f"spklite: mirror: {printable(want.name)} from {printable(want.link)}: {printable(why)}")
        else:
            copied += 1
            progress.done += 1
            progress.show()
    removed = 0
    if delete and (problems or bad):  # a file missing from a broken answer may well still be offered
        progress.say("spklite: mirror: --delete skipped: not every catalog answered in full")
    elif delete:
        for name in store.unoffered(wanted):
            remove(os.path.join(folder, name))
            store.state["files"].pop(name, None)
            store.state["parts"].pop(name[1:-5] if name.endswith(".part") else "", None)
            removed += 1
    store.save()
    progress.end()
    out.write(
        f"mirror of {shown} into {printable(folder)}: {plural(len(wanted), 'file')} offered to "
        f"{plural(len(asked), 'NAS profile')}, {copied} copied ({megabytes(progress.got)} downloaded), {len(present)} "
        f"already here, {removed} removed, {len(failed)} failed\n"
    )
    return 1 if failed else 0
