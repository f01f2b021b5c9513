"""`spklite doctor [URL]`: the package source checked the way a NAS sees it.

Fetches the catalog as DSM 7, 6 and 5 units of a few common platforms do (SPEC 1.1-1.5) and reports, one line
per check group: TLS, strict JSON and the shape each DSM build expects, the URLs a NAS is given, every download
(size and md5, streamed) and image, and the dependencies the source does not hold. Exit 1 on any error.
Only the standard library's HTTP client talks to the source: this checks any source, not only spklite.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, namedtuple

from spklite import __version__, config
from spklite.config import is_loopback
from spklite.index import printable
from spklite.synology import DICT_SHAPE_BUILD, DSM7_BUILD, version_key

try:
    import ssl
except ImportError:  # a Python without OpenSSL (OpenWrt's python3-openssl is optional) checks http sources
    ssl = None  # type: ignore[assignment]

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TextIO

TIMEOUT = 10.0  # seconds a socket may wait for the source
MAX_DOWNLOAD = 1 << 30  # bytes downloaded in full at most; past it files are checked with HEAD
MAX_CATALOG = 64 << 20  # a larger catalog answer is an error, not a memory hog
MAX_IMAGE = 16 << 20
MIN_RATE = 100_000  # bytes/s: a transfer slower than this on average (after TIMEOUT) is reported, not waited for
CHUNK = 1 << 16
SHOWN = 12  # problem lines shown per group
WIDTH = 26  # the group name column

Profile = namedtuple("Profile", "dsm build platform model")
# DSM 7.2.2, 6.2.4 and 5.0 (the last one answered with a bare list) on x86_64, armv8, armv7 and i686 units.
PROFILES = (
    Profile("7.2.2", 72806, "apollolake", "DS918+"),
    Profile("7.2.2", 72806, "geminilake", "DS920+"),
    Profile("7.2.2", 72806, "rtd1296", "DS218"),
    Profile("6.2.4", 25556, "apollolake", "DS918+"),
    Profile("6.2.4", 25556, "rtd1296", "DS218"),
    Profile("6.2.4", 25556, "armada38x", "DS218j"),
    Profile("5.0", 4458, "cedarview", "DS412+"),
    Profile("5.0", 4458, "evansport", "DS214play"),
)
SHAPES = {"list": "a bare list", "keyrings": '{"packages", "keyrings"}', "packages": '{"packages"}'}
MD5 = re.compile(r"[0-9a-fA-F]{32}")
DEPENDENCY = re.compile(r"\s*([^<>=!\s]+)\s*(?:(>=|<=|==|>|<|=)\s*(\S+))?\s*")


class Failure(Exception):
    """A request that did not get a usable answer; str() says why in a few words."""

    def __init__(self, text: str, reachable: bool = True, status: int = 0):
        super().__init__(text)
        self.reachable = reachable  # False: no HTTP answer at all (refused, timeout, TLS, bad address)
        self.status = status  # the HTTP status of an error answer, else 0


# Output #####################################################################################################


class Group:
    """One check group: a line with its verdict and summary, then its problems."""

    def __init__(self, name: str):
        self.name, self.summary = name, ""
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    @property
    def verdict(self) -> str:
        return "ERROR" if self.errors else "WARN" if self.warnings else "OK"


class Report:
    def __init__(self, out: TextIO):
        self.out = out
        self.errors = self.warnings = 0

    def show(self, group: Group) -> None:
        self.errors += len(group.errors)
        self.warnings += len(group.warnings)
        problems = [f"error: {t}" for t in group.errors] + [f"warning: {t}" for t in group.warnings]
        if not group.summary and len(problems) == 1:  # the problem is the whole story: one line
            group.summary, problems = (group.errors + group.warnings)[0], []
        self.out.write(f"{group.verdict:<6}{group.name:<{WIDTH}}{printable(group.summary)}\n")
        for text in problems[:SHOWN]:
            self.out.write(f"{'':6}- {printable(text)}\n")
        if len(problems) > SHOWN:
            self.out.write(f"{'':6}- ... and {len(problems) - SHOWN} more\n")
        self.out.flush()

    def finish(self) -> int:
        counts = f"{plural(self.errors, 'error')}, {plural(self.warnings, 'warning')}"
        if self.errors:
            self.out.write(f"summary: {counts}: a NAS will not get everything this source offers\n")
        else:
            self.out.write(f"summary: {counts}: a NAS gets this source as it is meant\n")
        return 1 if self.errors else 0


def plural(count: int, word: str, words: str = "") -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


# HTTP #######################################################################################################


class Client:
    """urllib with a timeout on every request, no proxy (a NAS does not use this machine's), and TLS verified
    against the system CA store until told otherwise."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.tls = ssl.create_default_context() if ssl else None
        self.opener = self._opener()

    def _opener(self) -> urllib.request.OpenerDirector:
        if self.tls is None:
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.tls)
        )

    def trust_any_certificate(self) -> None:
        """Go on checking the rest of a source whose certificate failed (reported once, by check_tls)."""
        self.tls = ssl.create_default_context()
        self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE
        self.opener = self._opener()

    def open(self, url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None):
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            return self.opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise Failure(f"HTTP {exc.code} {exc.reason}", status=exc.code) from None
        except urllib.error.URLError as exc:
            raise Failure(reason_text(exc.reason), reachable=False) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise Failure(reason_text(exc), reachable=not isinstance(exc, OSError)) from None

    def read(self, response: Any, limit: int) -> Iterable[bytes]:
        """The body in chunks as they arrive (read1: a trickle cannot hold a whole chunk back), at most `limit` + 1
        bytes; after a grace of `timeout`, slower than MIN_RATE on average is a failure."""
        start, got = time.monotonic(), 0
        try:
            while got <= limit:
                chunk = response.read1(min(CHUNK, limit + 1 - got))
                if not chunk:
                    return
                got += len(chunk)
                yield chunk
                if time.monotonic() - start > self.timeout + got / MIN_RATE:
                    raise Failure(f"too slow (under {megabytes(MIN_RATE)}/s): gave up after {got} bytes")
        except (OSError, http.client.HTTPException) as exc:
            raise Failure(reason_text(exc)) from None


def reason_text(reason: Any) -> str:
    if ssl and isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {reason.verify_message}"
    if ssl and isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason.reason or reason}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "no answer in time"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror})"
    if isinstance(reason, http.client.IncompleteRead):
        return f"the answer ended early ({len(reason.partial)} bytes)"
    if isinstance(reason, http.client.HTTPException):
        return f"not a valid HTTP answer ({type(reason).__name__})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


# Checks #####################################################################################################


def check_tls(client: Client, url: str, report: Report) -> bool:
    """An https source's certificate, verified as a NAS does: one clear line when it is not trusted.
    False when there is no TLS connection at all."""
    parts = urllib.parse.urlsplit(url)
    group = Group("tls")
    host, port = parts.hostname or "", parts.port or 443
    try:
        with socket.create_connection((host, port), timeout=client.timeout) as raw:
            with ssl.create_default_context().wrap_socket(raw, server_hostname=host) as tls:
                cert = tls.getpeercert() or {}
        expires = ssl.cert_time_to_seconds(str(cert["notAfter"]))
        days = int((expires - time.time()) // 86400)
        group.summary = f"the certificate of {host} is trusted by the system CA store; expires in {days} days"
        if days < 14:
            group.warn(f"the certificate expires in {days} days")
    except ssl.SSLCertVerificationError as exc:
        group.error(
            f"{host}:{port}: certificate not trusted ({exc.verify_message}): a NAS refuses this source; use a "
            "certificate from a public CA (Let's Encrypt) or plain http (the checks below skip verification)"
        )
        client.trust_any_certificate()
    except (OSError, ssl.SSLError, KeyError, ValueError) as exc:
        group.error(f"{host}:{port}: no TLS connection ({reason_text(exc)}): a NAS cannot use this source")
        report.show(group)
        return False
    report.show(group)
    return True


def catalog_request(
    url: str, profile: Profile, channel: str = "stable", unique: str | None = None
) -> tuple[str, bytes | None, dict[str, str]]:
    """The URL, body and headers of a catalog request as this NAS sends it (SPEC 1.1): DSM 6/7 use GET, DSM 5.0
    POSTs a form; `unique` (default: from the profile's model; "": none) keeps its raw `+` as DSM sends it."""
    major, minor, micro = (profile.dsm.split(".") + ["0"])[:3]
    unique = f"synology_{profile.platform}_{profile.model.lower()}" if unique is None else unique
    params = {
        "language": "enu",
        "timezone": "Amsterdam",
        "unique": unique,
        "arch": profile.platform,
        "major": major,
        "minor": minor,
        "build": str(profile.build),
        "package_update_channel": channel,
    }
    if not unique:
        del params["unique"]
    if profile.build >= 15047:  # micro and nano came with DSM 6.1
        params.update(micro=micro, nano="0")
    query = urllib.parse.urlencode(params, safe="+")
    if profile.build < DICT_SHAPE_BUILD:
        agent = "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)"  # DSM before 5.1 poses as a browser
        headers = {"User-Agent": agent, "Content-Type": "application/x-www-form-urlencoded"}
        return url, query.encode("ascii"), headers
    agent = f"{unique or 'synology_' + profile.platform} DSM{major}.{minor}-{profile.build} (package)"
    return url + ("&" if urllib.parse.urlsplit(url).query else "?") + query, None, {"User-Agent": agent}


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_catalog(body: bytes, build: int) -> list[Any]:
    """The package entries of a catalog answer; ValueError says what a strict DSM parser would refuse."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not strict JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise ValueError(f"not strict JSON: {exc}") from None
    shape = shape_of(build)
    if shape == "list":
        if not isinstance(document, list):
            raise ValueError(f"{SHAPES['list']} expected (DSM < 5.1), got {type_name(document)}")
        return document
    if not isinstance(document, dict) or not isinstance(document.get("packages"), list):
        raise ValueError(f"{SHAPES[shape]} expected, got {type_name(document)} without a \"packages\" list")
    if shape == "keyrings" and not isinstance(document.get("keyrings"), list):
        raise ValueError(f"{SHAPES[shape]} expected: no \"keyrings\" list (DSM 5.1-6.x; [] when none)")
    return list(document["packages"])


def type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def shape_of(build: int) -> str:
    """The answer shape a DSM build expects (SPEC 1.3), a key of SHAPES."""
    return "list" if build < DICT_SHAPE_BUILD else "keyrings" if build < DSM7_BUILD else "packages"


def entry_problems(entry: Any) -> list[str]:
    """What is wrong with one catalog entry (SPEC 1.5 types), in words."""
    if not isinstance(entry, dict):
        return [f"an entry is {type_name(entry)}, not an object"]
    name = entry.get("package")
    if not isinstance(name, str) or not name:
        return ['an entry has no "package" name']
    problems = []
    for key in ("version", "link"):
        if not isinstance(entry.get(key), str):
            problems.append(f'"{key}" missing or not a string')
    for key in ("dname", "desc"):
        if key in entry and not isinstance(entry[key], str):
            problems.append(f'"{key}" is not a string')
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        problems.append('"size" is not a byte count')
    md5 = entry.get("md5")
    if md5 is not None and not (isinstance(md5, str) and MD5.fullmatch(md5)):
        problems.append('"md5" is not 32 hex digits')
    for key in ("thumbnail", "thumbnail_retina", "snapshot"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
            problems.append(f'"{key}" is not a list of URLs')
    for key in ("qinst", "qupgrade", "qstart", "start"):
        if key in entry and not isinstance(entry[key], bool):
            problems.append(f'"{key}" is not true/false')
    if entry.get("deppkgs") is not None and not isinstance(entry["deppkgs"], str):
        problems.append('"deppkgs" is not a string')
    return [f"{name}: {text}" for text in problems]


def fetch_catalogs(client: Client, url: str, report: Report) -> dict[Profile, list[dict[str, Any]]] | None:
    """Every profile's valid entries; None when the source cannot be reached at all."""
    answers: dict[Profile, list[dict[str, Any]]] = {}
    for dsm in dict.fromkeys(profile.dsm for profile in PROFILES):
        profiles = [profile for profile in PROFILES if profile.dsm == dsm]
        group = Group(f"catalog DSM {dsm}-{profiles[0].build}")
        counts = []
        for profile in profiles:
            request_url, body, headers = catalog_request(url, profile)
            try:
                with client.open(request_url, "POST" if body else "GET", body, headers) as response:
                    data = b"".join(client.read(response, MAX_CATALOG))
                if len(data) > MAX_CATALOG:
                    raise Failure(f"answer larger than {megabytes(MAX_CATALOG)}")
                entries = parse_catalog(data, profile.build)
            except Failure as exc:
                if not exc.reachable and not answers and not group.errors:  # the first request: nothing to check
                    group.error(f"cannot reach {url}: {exc} (is the URL right, the server running?)")
                    report.show(group)
                    return None
                group.error(f"{profile.platform} ({'POST' if body else 'GET'}): {exc}")
                continue
            except ValueError as exc:
                group.error(f"{profile.platform}: {exc}")
                continue
            valid = []
            for entry in entries:
                problems = entry_problems(entry)
                for text in problems:
                    group.error(f"{profile.platform}: {text}")
                if not problems:
                    valid.append(entry)
            for name, count in sorted(Counter(entry["package"] for entry in valid).items()):
                if count > 1:
                    group.error(f"{profile.platform}: {name} is listed {count} times")
            answers[profile] = valid
            counts.append(f"{profile.platform} {len(valid)}")
        shape = SHAPES[shape_of(profiles[0].build)]
        offered = f"{', '.join(counts)} packages" if counts else "no answer to check"
        group.summary = f"{'expects ' if group.errors else ''}strict JSON, {shape}: {offered}"
        report.show(group)
    return answers


def entry_urls(entry: dict[str, Any]) -> list[str]:
    return [entry["link"], *entry.get("thumbnail", []), *entry.get("thumbnail_retina", []), *entry.get("snapshot", [])]


def check_urls(source: str, answers: dict[Profile, list[dict[str, Any]]], report: Report) -> set[str]:
    """The URLs a NAS is given: absolute http(s), reachable by a NAS. Returns the ones worth requesting."""
    group = Group("urls")
    urls = {url for entries in answers.values() for entry in entries for url in entry_urls(entry)}
    source_parts = urllib.parse.urlsplit(source)
    good, loopback, hosts = set(), set(), set()
    for url in sorted(urls):
        parts = urllib.parse.urlsplit(url)
        try:
            host = parts.hostname or ""
            parts.port  # noqa: B018  # raises ValueError on a bad port
        except ValueError:
            host = ""
        if parts.scheme not in ("http", "https") or not host:
            group.error(f"not an absolute http(s) URL: {url!r}")
            continue
        if host in ("0.0.0.0", "::"):
            group.error(f"{url}: a NAS cannot connect to {host}")
            continue
        if is_loopback(host):
            loopback.add(parts.netloc)
        hosts.add(f"{parts.scheme}://{parts.netloc}")
        good.add(url)
    for origin in sorted(hosts):
        if not origin.startswith(source_parts.scheme + ":"):
            group.warn(f"URLs on {origin} while the source is {source_parts.scheme}")
    for netloc in sorted(loopback):
        if is_loopback(source_parts.hostname or ""):
            hint = (
                "links follow the address the NAS uses: run doctor with this machine's LAN address, "
                "or set --hostname"
            )
        else:
            hint = "set --hostname to the address a NAS uses"
        group.warn(f"URLs point at {netloc}, a loopback address: a NAS cannot reach it ({hint})")
    group.summary = f"{plural(len(urls), 'URL')} on {', '.join(sorted(hosts)) or 'no host'}"
    report.show(group)
    return good


def check_dependencies(answers: dict[Profile, list[dict[str, Any]]], report: Report) -> None:
    """`install_dep_packages` (deppkgs) that the same NAS cannot get from this source: a warning, since they
    may come from another source (Synology's own packages)."""
    group = Group("dependencies")
    missing: dict[str, list[Profile]] = {}
    checked = set()
    for profile, entries in answers.items():
        offered = {entry["package"]: entry["version"] for entry in entries}
        for entry in entries:
            for item in filter(None, (entry.get("deppkgs") or "").split(":")):
                checked.add((entry["package"], item))
                problem = dependency_problem(item, offered)
                if problem:
                    missing.setdefault(f"{entry['package']} needs {problem}", []).append(profile)
    for text, profiles in missing.items():
        group.warn(f"{text}, for {profiles_text(profiles)} (unless another source has it)")
    group.summary = f"{plural(len(checked), 'dependency', 'dependencies')} checked"
    group.summary += "" if missing else ", all in this source"
    report.show(group)


def dependency_problem(item: str, offered: dict[str, str]) -> str:
    match = DEPENDENCY.fullmatch(item)
    if not match:
        return f"'{item}', which is not a dependency DSM can read"
    name, operator, wanted = match.groups()
    if name not in offered:
        return f"{name}: not in this source"
    have = version_key(offered[name])
    results = {"<": have < version_key(wanted or ""), ">": have > version_key(wanted or "")}
    results.update({"<=": not results[">"], ">=": not results["<"]})
    if operator and not results.get(operator, have == version_key(wanted)):
        return f"{name} {operator} {wanted}: this source has {offered[name]}"
    return ""


def profiles_text(profiles: list[Profile]) -> str:
    by_dsm: dict[str, list[str]] = {}
    for profile in profiles:
        by_dsm.setdefault(profile.dsm, []).append(profile.platform)
    return "; ".join(f"DSM {dsm} {' '.join(platforms)}" for dsm, platforms in by_dsm.items())


class Budget:
    """The bytes still allowed for full downloads; past them (or with --quick) files get a HEAD."""

    def __init__(self, total: int, quick: bool):
        self.left, self.quick = total, quick

    def allows(self, size: int) -> bool:
        return not self.quick and 0 <= size <= self.left


def check_downloads(
    client: Client, answers: dict[Profile, list[dict[str, Any]]], urls: set[str], budget: Budget, report: Report
) -> None:
    """Every `link` answers 200 with the advertised size and md5 (streamed), or, past the budget, to HEAD."""
    group = Group("downloads")
    advertised: dict[str, tuple[Any, Any]] = {}
    for entries in answers.values():
        for entry in entries:
            if entry["link"] in urls:
                claim = (entry.get("size"), (entry.get("md5") or "").lower() or None)
                if advertised.setdefault(entry["link"], claim) != claim:
                    group.error(f"{entry['link']}: a different size or md5 for different NAS units")
    verified = md5_checked = headed = downloaded = 0
    for url, (size, md5) in sorted(advertised.items()):
        full = budget.allows(size or 0)
        headed += not full
        try:
            got, digest = download(client, url, size, (budget.left if size is None else size) if full else None)
        except Failure as exc:
            group.error(f"{url}: {exc}")
            continue
        budget.left -= (got or 0) if full else 0
        if size is None:
            group.warn(f"{url}: no size advertised")
        elif got is None:
            group.warn(f"{url}: HEAD gave no Content-Length: size not checked")
        elif got != size:
            group.error(f"{url}: {'more than' if got > size else 'only'} {got} bytes, the catalog says {size}")
            continue
        if digest and md5 and digest != md5:
            group.error(f"{url}: md5 {digest}, the catalog says {md5}")
            continue
        verified += 1
        md5_checked += bool(digest and md5)
        downloaded += got if full and got else 0
    if budget.quick:
        how = "HEAD only"
    else:
        how = f"{megabytes(downloaded)} downloaded, {md5_checked} md5 checked"
        if headed:
            group.warn(f"{plural(headed, 'file')} past the download cap (--max-download) checked with HEAD only")
    group.summary = f"{verified}/{plural(len(advertised), 'file')} as advertised ({how})"
    report.show(group)


def download(client: Client, url: str, size: Any, limit: int | None) -> tuple[int | None, str]:
    """(bytes, md5 hex) of a GET streamed to the end (at most `limit` + 1 bytes), or with no limit,
    (Content-Length, "") of a HEAD."""
    with client.open(url, "HEAD" if limit is None else "GET") as response:
        header = response.headers.get("Content-Length")
        length = int(header) if header and header.isdigit() else None
        if limit is None or (length is not None and size is not None and length != size):
            return length, ""  # a wrong length is reported without reading the body
        digest = hashlib.md5(usedforsecurity=False)  # usedforsecurity: FIPS builds allow md5 for checksums
        got = 0
        for chunk in client.read(response, limit):
            digest.update(chunk)
            got += len(chunk)
        return got, digest.hexdigest()


def check_images(
    client: Client, answers: dict[Profile, list[dict[str, Any]]], urls: set[str], budget: Budget, report: Report
) -> None:
    """Every thumbnail and snapshot URL answers 200 with some bytes (HEAD past the budget or with --quick)."""
    group = Group("images")
    images = sorted(
        {url for entries in answers.values() for entry in entries for url in entry_urls(entry)[1:] if url in urls}
    )
    for url in images:
        full = budget.allows(1)
        try:
            with client.open(url, "GET" if full else "HEAD") as response:
                if full:
                    size = sum(map(len, client.read(response, MAX_IMAGE)))
                    budget.left -= size
                    if not size:
                        group.error(f"{url}: empty")
        except Failure as exc:
            group.error(f"{url}: {exc}")
    group.summary = f"{len(images) - len(group.errors)}/{len(images)} answer 200"
    report.show(group)


# The command ################################################################################################


def own_url(cfg: dict[str, Any]) -> str:
    """The URL of the server this config runs: its `hostname` (and `scheme`) when set, as a NAS is told to use;
    else its own address, a wildcard bind reached on loopback. spklite itself speaks plain http: `scheme`
    alone (a TLS proxy in front) says nothing about where that proxy listens."""
    if cfg["hostname"]:
        return f"{cfg['scheme'] or 'http'}://{cfg['hostname']}/"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg["host"], cfg["host"])
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg['port']}/"


def source_url(text: str, command: str = "doctor") -> str:
    """A URL as typed into Package Center: `nas:8080` means http://nas:8080/."""
    url = text.strip() if "://" in text else "http://" + text.strip()
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise config.ConfigError(f"{command}: '{text}' has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config.ConfigError(f"{command}: '{text}' is not an http:// or https:// URL")
    if parts.scheme == "https" and ssl is None:
        raise config.ConfigError(f"{command}: this Python has no ssl module (OpenSSL): it cannot use https sources")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path or "/"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def kind(setting_kind: config.Kind) -> Callable[[str], Any]:
        def parse(raw: str) -> Any:
            try:
                return setting_kind.parse(raw)
            except (ValueError, TypeError):
                raise argparse.ArgumentTypeError(f"'{raw}' is not {setting_kind.allowed}") from None

        return parse

    parser.add_argument("url", nargs="?", metavar="URL", help="the package source (default: this server's own URL)")
    parser.add_argument("--quick", action="store_true", help="check downloads with HEAD instead of in full")
    parser.add_argument(
        "--timeout", type=kind(config.duration(0.1, 3600)), default=TIMEOUT, metavar="DURATION",
        help=f"how long each request may wait (default: {TIMEOUT:g}s)",
    )
    parser.add_argument(
        "--max-download", type=kind(config.size(0)), default=MAX_DOWNLOAD, metavar="SIZE",
        help="bytes downloaded in full at most; the rest is checked with HEAD (default: 1GiB)",
    )


def doctor_command(namespace: argparse.Namespace, load_config: Callable[[], dict[str, Any]]) -> int:
    url = source_url(namespace.url or own_url(load_config()))
    return doctor(url, namespace.quick, namespace.timeout, namespace.max_download, sys.stdout)


def doctor(url: str, quick: bool, timeout: float, max_download: int, out: TextIO) -> int:
    report = Report(out)
    cap = config.show_size(max_download)
    how = "downloads checked with HEAD" if quick else f"downloads verified in full up to {cap}"
    out.write(f"spklite {__version__} doctor: {url} as {len(PROFILES)} NAS units see it ({how})\n")
    client = Client(timeout)
    tls_ok = urllib.parse.urlsplit(url).scheme != "https" or check_tls(client, url, report)
    answers = fetch_catalogs(client, url, report) if tls_ok else None
    if answers is not None:
        urls = check_urls(url, answers, report)
        check_dependencies(answers, report)
        budget = Budget(max_download, quick)
        check_downloads(client, answers, urls, budget, report)
        check_images(client, answers, urls, budget, report)
    return report.finish()
