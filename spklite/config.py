"""The configuration: ONE schema from which defaults, parsing, the YAML file, the environment variables and
the command-line flags (spklite.cli) are all derived.

A config is a plain dict keyed by dotted key paths ("filesystem.cache", "server.threads"): every key present,
every value typed and validated, every path absolute. Sources, highest first: flags > environment
(SPKLITE_<KEY>, then gosspks' GOSSPKS_<KEY>) > YAML file (under `spklite:` or gosspks' `gosspks:`) > defaults.
A relative path is taken from where it was written: the current folder for flags and the environment, the config
file's folder for the file, the home folder for the defaults.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any

# PyYAML, json and ipaddress are imported where they are needed: start-up time and memory count on small devices.

log = logging.getLogger(__name__)

TOP_KEY = "spklite"
GOSSPKS_TOP_KEY = "gosspks"
ENV_PREFIXES = ("SPKLITE_", "GOSSPKS_")
CONFIG_NAME = "config.yml"
GOSSPKS_CONFIG_NAME = "gosspks.yml"  # what gosspks really wrote into its home (its --help said config.yml)
MAX_FILE_BYTES = 1 << 20  # config files and keyrings hold a few KiB: more is a wrong path (/dev/zero, say)
# gosspks sections that have no meaning any more: the index is live (no TTL) and CORS headers are always sent.
IGNORED_GOSSPKS_SECTIONS = ("cache", "cors")
RESERVED_PREFIXES = ("v1", "about", "health", "getlist", "metrics")  # first path segments the app routes itself
PROXY_HEADERS = (
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-by",
    "forwarded",
)  # what waitress can take from a trusted proxy
# Patterns are kept as text, compiled by `re` on first use: most never run at start-up.
ARMOUR = r"-----BEGIN PGP PUBLIC KEY BLOCK-----(?s:.*?)-----END PGP PUBLIC KEY BLOCK-----"


class ConfigError(Exception):
    """A setting cannot be used; str(error) is one line naming the setting, the value and what is allowed."""


class Refused(ValueError):
    """A value refused for a reason of its own: str(error) says the value and why (the setting's name goes
    before it)."""


# Kinds of values ############################################################################################


def _same(value: Any) -> Any:
    return value


class Kind(namedtuple("Kind", "parse allowed metavar show shape", defaults=("TEXT", _same, "value"))):
    """How a raw value (a flag or environment string, a YAML scalar or list) becomes a typed value."""

    __slots__ = ()
    parse: Callable[[Any], Any]  # raises ValueError (or TypeError) when the value is not allowed
    allowed: str  # what is allowed: shown in error messages and --help
    metavar: str
    show: Callable[[Any], Any]  # typed value -> what the YAML/JSON file holds (and parses back)
    shape: str  # "value", "bool" or "list": how the command line takes it


def _text(raw: Any) -> str:
    """A scalar as text; YAML may have turned `hostname: 1234` into an int."""
    if isinstance(raw, (dict, list, tuple, bool, bytes)) or raw is None:
        raise TypeError(raw)
    return _storable(str(raw).strip())


def _storable(value: str) -> str:
    """Text that the config file can hold: no NUL (no path or name can; a YAML "\\0" escape would fail later in
    os calls), no bytes that are not UTF-8 (a flag or variable's, kept as surrogates: YAML cannot write them, so
    the first-run file would not read back)."""
    if "\0" in value:
        raise ValueError(value)
    value.encode("utf-8")  # UnicodeEncodeError, a ValueError, for surrogates
    return value


def integer(lo: int, hi: int) -> Kind:
    def parse(raw: Any) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*\+?\d+\s*", raw):
            number = int(raw)
        else:
            raise ValueError(raw)
        if not lo <= number <= hi:
            raise ValueError(raw)
        return number

    return Kind(parse, f"a whole number from {lo} to {hi}", "N")


TRUE_WORDS = ("true", "yes", "on", "1", "t", "y")
FALSE_WORDS = ("false", "no", "off", "0", "f", "n")


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = _text(raw).lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(raw)


BOOLEAN = Kind(parse_bool, "true or false (yes/no, on/off, 1/0)", "BOOL", shape="bool")


def choice(
    choices: Sequence[str], aliases: Mapping[str, str] | None = None, allowed: str = "", metavar: str = ""
) -> Kind:
    """One of `choices`, any case; `aliases` maps other accepted words (gosspks' names) to a choice."""
    names = dict(aliases or {})

    def parse(raw: Any) -> str:
        if isinstance(raw, bool):  # YAML 1.1 reads a bare `off` as false
            raw = "on" if raw else "off"
        word = _text(raw).lower()
        word = names.get(word, word)
        if word not in choices:
            raise ValueError(raw)
        return word

    return Kind(parse, allowed or "one of " + ", ".join(choices), metavar or "|".join(c for c in choices if c))


def text(
    pattern: str = "",
    allowed: str = "any text",
    metavar: str = "TEXT",
    tidy: Callable[[str], str] = _same,
    required: bool = False,
) -> Kind:
    """Free text, or text matching `pattern` after `tidy`; empty text unless `required`."""

    def parse(raw: Any) -> str:
        value = tidy(_text(raw))
        if (required and not value) or (value and pattern and not re.fullmatch(pattern, value)):
            raise ValueError(raw)
        return value

    return Kind(parse, allowed, metavar)


def path(allow_empty: bool = False) -> Kind:
    """A file or folder; made absolute by load(), against the folder its source stands for."""

    def parse(raw: Any) -> str:
        value = _text(raw)
        if not value and not allow_empty:
            raise ValueError(raw)
        return os.path.expanduser(value) if value else ""

    allowed = "a file path, or empty for the bundled one" if allow_empty else "a folder path"
    return Kind(parse, allowed, "PATH")


def _parse_prefix(raw: Any) -> str:
    segments = _text(raw).strip("/").split("/")
    if segments == [""] or segments[0].lower() in RESERVED_PREFIXES:
        raise ValueError(raw)
    for segment in segments:
        if segment in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._~-]+", segment):
            raise ValueError(raw)
    return "/" + "/".join(segments)


PREFIX = Kind(
    _parse_prefix,
    "a URL path such as /download or download (letters, digits, . _ ~ -), not / and not /v1, /about, "
    "/health, /getList or /metrics",
    "PREFIX",
)

BETA_PREFIX = Kind(
    lambda raw: _parse_prefix(raw) if _text(raw) else "",
    PREFIX.allowed + ", or empty for none",
    "PREFIX",
)
CHANNELS_ALLOWED = ("a mapping of URL prefixes to sub-folders of the packages folder, e.g. {/testing/: testing, "
                    "/s/<token>/: {folder: private, beta: true}}")


def _parse_channels(raw: Any) -> Any:
    from spklite import channels  # the rules of channels are that module's

    return channels.parse(raw)


def _show_channels(value: Any) -> Any:
    from spklite import channels

    return channels.show(value)


CHANNELS = Kind(_parse_channels, CHANNELS_ALLOWED, "MAPPING", _show_channels)


def _parse_base_url(raw: Any) -> str:
    """An absolute http(s) URL that file names are appended to (a CDN, a bucket): printable ASCII, a host, no
    query or fragment; kept without its trailing slash."""
    value = _text(raw).rstrip("/")
    if value:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if not re.fullmatch(r"(?i)https?://[!-~]+", value) or not parts.hostname or "?" in value or "#" in value:
            raise ValueError(raw)
        parts.port  # noqa: B018 - ValueError for a port that is no number or out of range
    return value


BASE_URL = Kind(
    _parse_base_url,
    "an absolute http or https URL such as https://cdn.example.com/spk (no query), or empty for spklite's own",
    "URL",
)
ACCEL_PREFIX = Kind(
    lambda raw: _parse_prefix(raw) if _text(raw) else "",
    "a URL path such as /_spklite_files: an nginx internal location (letters, digits, . _ ~ -), or empty for "
    "none (spklite sends the files)",
    "PREFIX",
)

DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DAY = 86400  # the longest wait a setting may ask for: threading's waits overflow on absurd ones
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"


def duration(minimum: float, maximum: float) -> Kind:
    """Seconds: a plain number, or parts with units like 90s, 1.5m, 1h30m, 1d."""

    def parse(raw: Any) -> float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            seconds = float(raw)
        else:
            spec = _text(raw).lower().replace(" ", "")
            if re.fullmatch(_NUMBER, spec):
                seconds = float(spec)
            elif re.fullmatch(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+", spec):
                parts = re.findall(rf"({_NUMBER})(ms|s|m|h|d)", spec)
                seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
            else:
                raise ValueError(raw)
        if not math.isfinite(seconds) or not minimum <= seconds <= maximum:
            raise ValueError(raw)
        return seconds

    allowed = (
        "a duration such as 2s, 1.5m, 1h or 1d (a plain number is seconds), "
        f"from {show_duration(minimum)} to {show_duration(maximum)}"
    )
    return Kind(parse, allowed, "DURATION", show_duration)


def show_duration(seconds: float) -> str:
    if seconds == int(seconds) and seconds > 0:
        whole = int(seconds)
        for unit in ("d", "h", "m"):
            if whole % DURATION_UNITS[unit] == 0:
                return f"{whole // int(DURATION_UNITS[unit])}{unit}"
        return f"{whole}s"
    return f"{seconds:g}s"


SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1000,
              "m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
              "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1000**3}  # fmt: skip


def size(minimum: int) -> Kind:
    """Bytes: a plain number or 512K, 1M, 1MiB (1024-based), 1MB (1000-based)."""

    def parse(raw: Any) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        else:
            match = re.fullmatch(rf"({_NUMBER})\s*([a-z]*)", _text(raw).lower())
            if not match or match.group(2) not in SIZE_UNITS:
                raise ValueError(raw)
            scaled = float(match.group(1)) * SIZE_UNITS[match.group(2)]
            if not math.isfinite(scaled):  # 400 digits: float says inf
                raise ValueError(raw)
            number = int(scaled)
        if number < minimum:
            raise ValueError(raw)
        return number

    allowed = (
        f"a size in bytes such as 1048576, 512K, 1M or 1MiB (K/M/G count 1024, KB/MB/GB 1000), "
        f"at least {show_size(minimum)}"
    )
    return Kind(parse, allowed, "SIZE", show_size)


def show_size(number: int) -> Any:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if number and number % factor == 0:
            return f"{number // factor}{unit}"
    return number


def string_list(split: Callable[[str], list[str]], item_ok: Callable[[str], bool], allowed: str, metavar: str) -> Kind:
    """A YAML list, or text that `split` cuts into items; every item passes `item_ok`."""

    def parse(raw: Any) -> list[str]:
        if raw is None:
            return []
        pieces = raw if isinstance(raw, (list, tuple)) else [raw]
        items: list[str] = []
        for piece in pieces:
            if not isinstance(piece, str):
                raise TypeError(piece)
            for item in split(_storable(piece)):
                if item not in items:  # the same key or file twice is sent once
                    items.append(item)
        if not all(item_ok(item) for item in items):
            raise ValueError(raw)
        return items

    return Kind(parse, allowed, metavar, list, shape="list")


def split_keyrings(raw: str) -> list[str]:
    """Armoured key blocks stay whole; the text around them holds file paths, one a line or ':'-separated."""
    items: list[str] = []
    for number, piece in enumerate(re.split(f"({ARMOUR})", raw)):
        if number % 2:  # odd pieces are the captured key blocks
            items.append(piece)
        else:
            items.extend(p.strip() for p in re.split(r"[\n:]", piece) if p.strip())
    return items


def is_armoured(entry: str) -> bool:
    return entry.lstrip().startswith("-----BEGIN PGP")


KEYRINGS = string_list(
    split_keyrings,
    lambda item: bool(re.fullmatch(ARMOUR, item)) or "-----BEGIN" not in item,
    "files holding ASCII-armoured GPG public keys, or the armoured keys themselves",
    "FILE",
)
PROXY_HEADER_LIST = string_list(
    lambda raw: [h.lower() for h in re.split(r"[\s,]+", raw) if h],
    lambda item: item in PROXY_HEADERS,
    "header names from " + ", ".join(PROXY_HEADERS),
    "HEADERS",
)


API_KEYS = string_list(
    lambda raw: re.split(r"[\s,]+", raw.strip()) if raw.strip() else [],
    lambda item: bool(re.fullmatch(r"[A-Za-z0-9._-]{1,64}:[0-9a-f]{32}:[0-9a-f]{64}", item)),
    "lines NAME:SALT:HASH as `spklite key add NAME` prints them",
    "KEY",
)


def _parse_trusted_proxy(raw: Any) -> str:
    value = _text(raw)
    if value not in ("", "*"):
        import ipaddress

        ipaddress.ip_address(value)  # ValueError when it is not an IP address
    return value


TRUSTED_PROXY = Kind(_parse_trusted_proxy, "an IP address such as 127.0.0.1, * for any, or empty for none", "IP")


# The schema #################################################################################################


class Setting(namedtuple("Setting", "key default kind help group aliases file_aliases meta", defaults=((), (), False))):
    __slots__ = ()
    key: str  # dotted key path: the config dict key, the YAML nesting, the --flag and the environment name
    default: Any  # a raw default, parsed like any other value
    kind: Kind
    help: str
    group: str
    aliases: tuple[str, ...]  # more flags: gosspks' names and short letters
    file_aliases: tuple[str, ...]  # other key paths accepted in the file and environment (gosspks' "gpg")
    meta: bool  # home and config: flags and environment only, never in the file

    @property
    def flag(self) -> str:
        return "--" + self.key.replace(".", "-")

    @property
    def env_names(self) -> list[str]:
        return [env_name(prefix, name) for prefix in ENV_PREFIXES for name in (self.key, *self.file_aliases)]


def env_name(prefix: str, name: str) -> str:
    """The variable for a key path or flag name: (SPKLITE_, filesystem.packages) -> SPKLITE_FILESYSTEM_PACKAGES."""
    return prefix + name.lstrip("-").replace(".", "_").replace("-", "_").upper()


HOST_LOOKUP_SECONDS = 5.0  # a host name to bind must resolve this soon: a resolver that hangs would hang the start
# A host name (RFC 1123): labels of letters, digits and inner hyphens, the last one not all digits (256.1.1.1 is
# no name: it is refused without asking a resolver).
HOST_NAME = r"(?=.{1,253}\.?$)((?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?=[0-9-]*[A-Za-z])(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.?"


def _parse_bind_address(raw: Any) -> str:
    """An IP address as waitress binds it (getaddrinfo's numeric forms), or a host name that resolves."""
    import socket

    host = _text(raw).strip("[]")
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
        return host
    except (OSError, UnicodeError):
        pass
    if not re.fullmatch(HOST_NAME, host):
        raise ValueError(raw)
    import threading

    resolved: list[bool] = []

    def look_up() -> None:
        try:
            resolved.append(bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)))
        except (OSError, UnicodeError):
            resolved.append(False)

    lookup = threading.Thread(target=look_up, name="spklite-host-lookup", daemon=True)  # left behind if it hangs
    lookup.start()
    lookup.join(HOST_LOOKUP_SECONDS)
    if resolved != [True]:
        raise ValueError(raw)
    return host


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.x, ::1): this machine only, never a NAS's way here."""
    import ipaddress

    name = host.lower().rstrip(".")
    if name in ("localhost", "localhost.localdomain", "ip6-localhost") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


BIND_ADDRESS = Kind(
    _parse_bind_address,
    f"an IP address such as 0.0.0.0 or ::, or a host name that resolves (within {HOST_LOOKUP_SECONDS:g} s)",
    "ADDRESS",
)
URL_HOST = text(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?(/[^\s?#]*)?",
    "a host name with optional :port and /path, without scheme",
    "HOST",
    lambda v: v.rstrip("/"),
)
LOG_LEVEL = choice(
    ("debug", "info", "warning", "error"),
    {"trace": "debug", "warn": "warning", "fatal": "error", "panic": "error", "critical": "error"},  # gosspks'
    metavar="LEVEL",
)
# Help groups, in the order --help shows them.
FILES, NETWORK, CATALOG, INDEX, LOGGING, TUNING, PUBLISHING = (
    "files and folders",
    "network and URLs",
    "catalog",
    "index",
    "logging",
    "server tuning",
    "publishing (uploads with API keys)",
)
GROUPS = (FILES, NETWORK, CATALOG, INDEX, LOGGING, TUNING, PUBLISHING)

# The order here is the order of the config file.
SCHEMA: tuple[Setting, ...] = (
    Setting(
        "home",
        "",
        path(),
        "home folder: the config file, packages and cache are here unless set (default: $HOME/spklite)",
        FILES,
        ("-H",),
        meta=True,
    ),
    Setting(
        "config",
        "",
        path(),
        "config file (default: <home>/config.yml, else gosspks' <home>/gosspks.yml)",
        FILES,
        ("-C",),
        meta=True,
    ),
    Setting("port", 8080, integer(1, 65535), "port to listen on", NETWORK, ("-p",)),
    Setting(
        "host",
        "0.0.0.0",
        BIND_ADDRESS,
        "address to bind to",
        NETWORK,
    ),
    Setting(
        "hostname",
        "",
        URL_HOST,
        "host name for generated URLs; empty: the request's own",
        NETWORK,
    ),
    Setting(
        "scheme",
        "",
        choice(("", "http", "https"), allowed="http, https, or empty for the request's own"),
        "scheme for generated URLs; empty: the request's own",
        NETWORK,
    ),
    Setting(
        "log-level",
        "info",
        LOG_LEVEL,
        "log level (gosspks' Trace, Warn, Fatal and Panic are understood)",
        LOGGING,
        ("-l",),
    ),
    Setting(
        "md5", True, BOOLEAN, "publish the md5 of every package (computed once per file, in the background)", CATALOG
    ),
    Setting(
        "download-count",
        True,
        BOOLEAN,
        "show each file's download count in catalog answers (counted per instance: replicas that must answer "
        "byte for byte turn it off)",
        CATALOG,
    ),
    Setting("debug-package", False, BOOLEAN, "add a pseudo-package showing what the NAS sent", CATALOG, ("-d",)),
    Setting(
        "filesystem.packages", "packages", path(), "folder of .spk files (subfolders included)", FILES, ("--packages",)
    ),
    Setting(
        "filesystem.cache", "cache", path(), "folder for the index snapshot and extracted icons", FILES, ("--cache",)
    ),
    Setting(
        "filesystem.models",
        "",
        path(allow_empty=True),
        "NAS model list (YAML); empty: the bundled list",
        FILES,
        ("--models",),
    ),
    Setting("router.download", "/download", PREFIX, "URL prefix of package downloads", NETWORK, ("--download",)),
    Setting("router.static", "/static", PREFIX, "URL prefix of icons and screenshots", NETWORK, ("--static",)),
    Setting("router.beta", "/beta", BETA_PREFIX, "URL prefix of the beta channel, whatever the NAS asks for",
            NETWORK),
    Setting(
        "channels",
        {},
        CHANNELS,
        "more sources: URL prefix -> sub-folder of the packages folder, offered only there (/s/<token>/: a "
        "secret one)",
        CATALOG,
    ),
    # Downloads from where bytes are cheap (README "Offloading downloads"): links to a CDN, or nginx sends the file.
    Setting(
        "router.download-url",
        "",
        BASE_URL,
        "base URL of package links, e.g. a CDN or bucket synced from the packages folder; empty: this server",
        NETWORK,
        ("--download-url",),
    ),
    Setting(
        "router.static-url",
        "",
        BASE_URL,
        "base URL of icons and screenshots, synced from <cache>/blobs; empty: this server",
        NETWORK,
        ("--static-url",),
    ),
    Setting(
        "router.accel-redirect",
        "",
        ACCEL_PREFIX,
        "nginx internal location of the packages folder: downloads are checked here and sent by nginx "
        "(X-Accel-Redirect); empty: this server sends them",
        NETWORK,
        ("--accel-redirect",),
    ),
    Setting(
        "watch",
        "auto",
        choice(("auto", "inotify", "poll", "off")),
        "how changes in the packages folder are noticed",
        INDEX,
    ),
    Setting("poll-interval", 2, duration(0.1, DAY), "time between folder scans when polling", INDEX),
    Setting("follow-symlinks", False, BOOLEAN, "serve symlinks that point outside the packages folder", INDEX),
    Setting(
        "keyrings",
        [],
        KEYRINGS,
        "GPG public keys sent to DSM 5.1-6: files or armoured keys (--keyring may be repeated)",
        CATALOG,
        ("--keyring",),
        ("gpg",),
    ),
    # 8, not waitress' 4: measured with 16 clients (make bench), 4 threads left requests queued and waitress'
    # event loop contending with the workers: 3x the CPU per request.
    Setting("server.threads", 8, integer(1, 1000), "worker threads", TUNING, ("--threads",)),
    Setting(
        "server.connection-limit",
        500,  # idle keep-alive clients count too: 100 (waitress' default) is easily reached
        integer(3, 100000),  # waitress counts its listening socket and wake-up pipe: with 2 it never accepts
        "most simultaneous connections",
        TUNING,
        ("--connection-limit",),
    ),
    Setting(
        "server.channel-timeout",
        120,
        duration(1, DAY),
        "close a connection idle this long",
        TUNING,
        ("--channel-timeout",),
    ),
    Setting(
        "server.trusted-proxy",
        "",
        TRUSTED_PROXY,
        "reverse proxy whose X-Forwarded-* headers are believed",
        TUNING,
        ("--trusted-proxy",),
    ),
    Setting(
        "server.trusted-proxy-count",
        1,
        integer(1, 100),
        "how many trusted proxies are in front",
        TUNING,
        ("--trusted-proxy-count",),
    ),
    Setting(
        "server.trusted-proxy-headers",
        list(PROXY_HEADERS[:4]),
        PROXY_HEADER_LIST,
        "headers taken from the trusted proxy",
        TUNING,
        ("--trusted-proxy-headers",),
    ),
    Setting(
        "server.max-request-body-size", "1MiB", size(1024), "largest request body", TUNING, ("--max-request-body-size",)
    ),
    Setting(
        "server.max-request-header-size",
        "64KiB",
        size(1024),
        "largest request header",
        TUNING,
        ("--max-request-header-size",),
    ),
    Setting(
        "server.metrics",
        True,
        BOOLEAN,
        "count requests (route, status, NAS platform, DSM build) for GET /metrics and /v1/stats; false: nothing "
        "is counted on the request path and /metrics is not served (download counts stay)",
        TUNING,
    ),
    Setting(
        "server.counts-interval",
        60,
        duration(1, DAY),
        "how often download counts are written to the cache folder and shown in catalog answers",
        TUNING,
    ),
    Setting("defaults.maintainer", "", text(), "maintainer shown when a package's INFO has none", CATALOG),
    Setting("defaults.maintainer-url", "", text(), "maintainer URL shown when INFO has none", CATALOG),
    Setting("defaults.distributor", "", text(), "distributor shown when INFO has none", CATALOG),
    Setting("defaults.distributor-url", "", text(), "distributor URL shown when INFO has none", CATALOG),
    Setting("defaults.support-url", "", text(), "support URL shown when INFO has none", CATALOG),
    # Publishing (spklite.publish): off while no key is configured.
    Setting(
        "publish.keys",
        [],
        API_KEYS,
        "API keys allowed to upload and delete, as `spklite key add NAME` prints them (--publish-key may be "
        "repeated); none: no upload route",
        PUBLISHING,
        ("--publish-key",),
    ),
    Setting(
        "publish.folder",
        "",
        text(allowed="a folder inside the packages folder (relative: to it), or empty for <packages>/published",
             metavar="PATH"),
        "where uploads land, inside the packages folder (default: <packages>/published)",
        PUBLISHING,
    ),
    Setting("publish.strict", False, BOOLEAN, "refuse uploads that `spklite check` warns about", PUBLISHING),
    Setting("publish.overwrite", False, BOOLEAN, "let ?overwrite=1 replace a published file", PUBLISHING),
    # Its own limit: server.max-request-body-size stays small for everything else while publishing is off.
    Setting("publish.max-size", "1GiB", size(1024), "largest upload", PUBLISHING),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SCHEMA}
FILE_ALIASES: dict[str, str] = {alias: s.key for s in SCHEMA for alias in s.file_aliases}
SECTIONS = {s.key.rsplit(".", 1)[0] for s in SCHEMA if "." in s.key}
PATHS = ("filesystem.packages", "filesystem.cache", "filesystem.models")  # and the keyrings that are files
# SPKLITE_ names that are not settings: the DSM package's start script and the test suite's own.
OTHER_ENV_NAMES = ("SPKLITE_SHARE_DIR", "SPKLITE_STRESS")


# Loading ####################################################################################################


def _shown(raw: Any) -> str:
    """The bad value as the user wrote it, on one short line; bytes that are not UTF-8 as escapes."""
    value = " ".join(str(raw).encode("utf-8", "backslashreplace").decode("utf-8").split())
    return "'" + (value if len(value) <= 60 else value[:57] + "...") + "'"


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    where = f" (from {source})" if source else ""
    try:
        return setting.kind.parse(raw)
    except Refused as exc:
        raise ConfigError(f"{setting.key}: {exc}{where}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{setting.key}: {_shown(raw)} is not allowed: {setting.kind.allowed}{where}") from None


def _pick(
    setting: Setting, flags: Mapping[str, Any], environ: Mapping[str, str], from_file: Mapping[str, Any], file_name: str
) -> tuple[Any, str]:
    """The raw value of the strongest source that has one, and where it came from ("" for the default)."""
    if flags.get(setting.key) is not None:
        return flags[setting.key], setting.flag
    for name in setting.env_names:
        if environ.get(name):  # an empty variable counts as unset, as it did for gosspks (viper)
            return environ[name], "environment " + name
    if setting.key in from_file:
        return from_file[setting.key], file_name
    return setting.default, ""


def _absolute(value: str, base: str = "") -> str:
    """`value` made absolute against `base`, or against the current folder when `base` is empty."""
    return os.path.abspath(os.path.join(base, os.path.expanduser(value)))


def _base(source: str, home: str, config_file: str) -> str:
    """The folder a relative path from `source` is taken from: where the person who wrote it stood."""
    if not source:
        return home  # the defaults: <home>/packages, <home>/cache
    if source == config_file:
        return os.path.dirname(config_file)
    return ""  # a flag or an environment variable: the current folder


def _anchored(key: str, value: Any, base: str) -> Any:
    """A setting's value with its relative paths made absolute against `base`."""
    if key in PATHS and value:
        return _absolute(value, base)
    if key == "keyrings":
        return [entry if is_armoured(entry) else _absolute(entry, base) for entry in value]
    return value


def _locate(flags: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, str]:
    """The home folder and the config file; both relative to the working directory when given relative."""
    home_setting, config_setting = BY_KEY["home"], BY_KEY["config"]
    raw, source = _pick(home_setting, flags, environ, {}, "")
    if source:
        home = _absolute(_parse(home_setting, raw, source))
    else:
        user_home = environ.get("HOME") or os.path.expanduser("~")
        home = _absolute(os.path.join(user_home, "spklite"))
    raw, source = _pick(config_setting, flags, environ, {}, "")
    if source:
        return home, _absolute(_parse(config_setting, raw, source))
    config_file = os.path.join(home, CONFIG_NAME)
    gosspks_file = os.path.join(home, GOSSPKS_CONFIG_NAME)
    if not os.path.exists(config_file) and os.path.isfile(gosspks_file):
        return home, gosspks_file  # pointing -H at an old gosspks home just works
    return home, config_file


# A config or model list needs a few aliases and a few levels; an "alias bomb" of a few hundred bytes (nine
# aliases to nine aliases to ..., nine deep) stands for a billion strings once anything walks it.
ALIAS_NODES = 10_000  # nodes that aliases may repeat in one document
YAML_DEPTH = 100  # levels of nesting


def load_yaml(source: str | bytes) -> Any:
    """yaml.safe_load, through libyaml when PyYAML has it: the config file is read at every start, and the
    pure-Python parser takes ~5 ms for it (the zipapp's PyYAML has no C module: the same answer, slower).

    A document whose aliases repeat more than ALIAS_NODES nodes, that refers to itself or that nests deeper than
    YAML_DEPTH is refused with a yaml.YAMLError: PyYAML shares an aliased node instead of copying it, but json,
    str() and every reader after it repeat it."""
    import yaml

    try:
        return yaml.load(source, Loader=_safe_loader())
    except RecursionError:  # the pure-Python composer recurses once per level
        raise yaml.YAMLError(f"nested deeper than {YAML_DEPTH} levels") from None


@functools.lru_cache(maxsize=None)
def _safe_loader() -> Any:
    """yaml's safe loader (libyaml's when there) that checks the composed document before making objects of it."""
    import yaml

    class SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_expansion(node)
            return node

    return SafeLoader


def _check_expansion(root: Any) -> None:
    """Raise a YAML error when the document under `root`, its aliases expanded, is endless, nests too deep or
    holds more than ALIAS_NODES nodes beyond its own. Each node is sized once (its children first), without
    recursion."""
    from yaml.composer import ComposerError

    sizes: dict[int, int] = {}  # id(node) -> its nodes with aliases expanded, for the nodes sized so far
    on_path: set[int] = set()
    stack = [(root, 1, False)]
    problem = ""
    while stack and not problem:
        node, depth, children_sized = stack.pop()
        if children_sized:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] - len(sizes) > ALIAS_NODES:  # at most len(sizes) of them are not repeats
                problem = f"its aliases repeat more than {ALIAS_NODES} nodes"
        elif id(node) in on_path:
            problem = "an alias inside its own anchor: a document without end"
        elif depth > YAML_DEPTH:
            problem = f"nested deeper than {YAML_DEPTH} levels"
        elif id(node) not in sizes:
            on_path.add(id(node))
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in _children(node))
    if problem:
        raise ComposerError(None, None, problem, node.start_mark)


def _children(node: Any) -> list[Any]:
    """A composed node's child nodes: a sequence's items, a mapping's keys and values, none for a scalar."""
    if isinstance(node.value, str):
        return []
    return [child for item in node.value for child in (item if isinstance(item, tuple) else (item,))]


def parsed_yaml(file_name: str, data: bytes, keep: bool) -> Any:
    """The YAML document in a config file's bytes.

    Importing PyYAML and parsing took 15% of a warm start (~35 ms here), so the document is kept beside the
    file as JSON (`.config.yml.json`) under the text's SHA-256 and read back while the file is unchanged.
    An edited file is parsed again; a document that is not plain JSON data is not kept; a kept file that is
    damaged or cannot be written costs only the parse.
    """
    import hashlib
    import json

    kept_file = os.path.join(os.path.dirname(file_name), f".{os.path.basename(file_name)}.json")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with open(kept_file, encoding="utf-8") as stream:
            kept = json.load(stream)
        if kept["sha256"] == digest:
            return kept["document"]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, or not ours: parse
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file_name}: not allowed: the config file must be UTF-8 text") from None
    import yaml  # only now: a server started without a config file, or with a kept one, never needs it

    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file_name}: invalid YAML{where}: {problem}") from None
    if keep:
        try:
            if json.loads(json.dumps(document)) == document:  # no dates, no numeric keys: JSON keeps it as is
                with open(kept_file, "w", encoding="utf-8") as stream:
                    json.dump({"sha256": digest, "document": document}, stream)
        except (OSError, TypeError, ValueError):
            pass
    return document


def read_file(file_name: str, keep_parsed: bool) -> dict[str, Any] | None:
    """The settings in a YAML config file as {dotted key: raw value}; None when there is no such file.

    With `keep_parsed`, the parsed document is kept beside the file for the next start (`parsed_yaml`)."""
    try:
        with open(file_name, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):  # a home under a file has no config either
        return None
    except OSError as exc:
        raise ConfigError(f"config: cannot read '{file_name}': {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"config: '{file_name}' is not allowed: a YAML file of at most {show_size(MAX_FILE_BYTES)}")
    document = parsed_yaml(file_name, data, keep_parsed)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{file_name}: not allowed: a YAML mapping with the top key '{TOP_KEY}:'")
    tops = {str(key).strip().lower(): value for key, value in document.items()}
    for key in tops:
        if key not in (TOP_KEY, GOSSPKS_TOP_KEY):
            log.warning("%s: top-level key '%s' ignored: settings go under '%s:'", file_name, key, TOP_KEY)
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for top in (GOSSPKS_TOP_KEY, TOP_KEY):  # spklite's own section wins over a gosspks one
        section = tops.get(top)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{file_name}: '{top}' is not allowed: a mapping of settings")
        _flatten(section, "", values, ignored, file_name)
    if ignored:
        log.warning(
            "%s: gosspks settings ignored (the index is live, CORS is always on): %s", file_name, ", ".join(ignored)
        )
    return values


def _flatten(mapping: dict[Any, Any], prefix: str, out: dict[str, Any], ignored: list[str], file_name: str) -> None:
    for raw_key, value in mapping.items():
        name = prefix + str(raw_key).strip().lower()  # keys are case-insensitive, as they were for viper
        if value is None:  # `maintainer:` with nothing after it means "not set here"
            continue
        if name in IGNORED_GOSSPKS_SECTIONS:
            ignored.append(name)
        elif name in FILE_ALIASES:
            out.setdefault(FILE_ALIASES[name], value)
        elif name in BY_KEY and not BY_KEY[name].meta:
            out[name] = value
        elif name in SECTIONS and isinstance(value, dict):
            _flatten(value, name + ".", out, ignored, file_name)
        elif name in BY_KEY:
            log.warning("%s: '%s' ignored: it can only be set by a flag or the environment", file_name, name)
        else:
            log.warning("%s: unknown setting '%s' ignored", file_name, name)


def load(flags: Mapping[str, Any], environ: Mapping[str, str], *, create_file: bool = True) -> dict[str, Any]:
    """The complete, typed, validated config. `flags` holds only the flags the user gave (dotted key -> raw).

    With `create_file`, the parsed config file is kept for the next start (`parsed_yaml`); without it nothing is
    written. A missing config file is written by `write_first_run`.
    """
    home, config_file = _locate(flags, environ)
    from_file = read_file(config_file, keep_parsed=create_file)
    _warn_unknown_environment(environ)
    cfg: dict[str, Any] = {"home": home, "config": config_file}
    for setting in SCHEMA:
        if not setting.meta:
            raw, source = _pick(setting, flags, environ, from_file or {}, config_file)
            cfg[setting.key] = _anchored(setting.key, _parse(setting, raw, source), _base(source, home, config_file))
            if setting.key == "filesystem.packages":
                _check_packages_folder(cfg[setting.key], source)
    _check_together(cfg)
    from spklite import channels  # the rules of channels are that module's

    channels.check(cfg)
    _check_waitress(cfg)
    if cfg["filesystem.models"] and not os.path.isfile(cfg["filesystem.models"]):
        # gosspks' config always names a models.yml it downloaded itself; without it the bundled list serves
        # (and a device such as /dev/zero would never end)
        log.warning("filesystem.models: '%s' is not a file, using the bundled model list", cfg["filesystem.models"])
        cfg["filesystem.models"] = ""
    return cfg


def _warn_unknown_environment(environ: Mapping[str, str]) -> None:
    """A misspelt SPKLITE_/GOSSPKS_ variable would be ignored without a word: name it, and what it likely meant."""
    known = {name for setting in SCHEMA for name in setting.env_names}
    for name, value in sorted(environ.items()):
        if not value or not name.startswith(ENV_PREFIXES) or name in known or name in OTHER_ENV_NAMES:
            continue
        prefix, rest = name[:8], name[8:]  # both prefixes have 8 letters
        if rest.split("_")[0].lower() in IGNORED_GOSSPKS_SECTIONS:
            log.warning("environment %s ignored: the index is live, CORS is always on", _shown(name))
            continue
        import difflib

        meant = _env_spellings(prefix)
        close = difflib.get_close_matches(name, sorted(meant), n=1)
        hint = f" (did you mean {meant[close[0]]}?)" if close else ""
        log.warning("environment %s ignored: no such setting%s", _shown(name), hint)


def _env_spellings(prefix: str) -> dict[str, str]:
    """Variable names a person may try -> the setting's variable: its key, gosspks' names and its long flags
    (SPKLITE_PACKAGES, after --packages, means SPKLITE_FILESYSTEM_PACKAGES)."""
    spellings: dict[str, str] = {}
    for setting in SCHEMA:
        names = (setting.key, *setting.file_aliases, *(a for a in setting.aliases if a.startswith("--")))
        for name in names:
            spellings.setdefault(env_name(prefix, name), env_name(prefix, setting.key))
    return spellings


def _check_packages_folder(folder: str, source: str) -> None:
    """A packages folder that does not exist yet is fine (served empty until it does); a file never becomes one."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        where = f" (from {source})" if source else ""
        shown = folder.encode("utf-8", "backslashreplace").decode("utf-8")  # whole: a path cut short names none
        raise ConfigError(f"filesystem.packages: '{shown}' is not allowed: it is a file; a folder of .spk files{where}")


def _check_together(cfg: Mapping[str, Any]) -> None:
    """Rules that involve two settings."""
    download, static = cfg["router.download"], cfg["router.static"]
    if overlap(download, static):
        # blame the one the user changed
        key, value, other = ("router.static", static, "router.download")
        if static == BY_KEY["router.static"].default:
            key, value, other = ("router.download", download, "router.static")
        raise ConfigError(f"{key}: '{value}' is not allowed: a prefix apart from {other} ('{cfg[other]}')")
    accel = cfg["router.accel-redirect"]
    for other in ("router.download", "router.static"):  # nginx would pass the redirect back here: a loop
        if accel and overlap(accel, cfg[other]):
            raise ConfigError(f"router.accel-redirect: '{accel}' is not allowed: a prefix apart from {other} "
                              f"('{cfg[other]}')")


def overlap(prefix: str, other: str) -> bool:
    """Whether two paths (URL prefixes, folders) share what lies under them: one is the other or lies under it."""
    return prefix == other or prefix.startswith(other + "/") or other.startswith(prefix + "/")


def _check_waitress(cfg: Mapping[str, Any]) -> None:
    """waitress' own rules across its options, applied to the options the server will give it: a bad mix (the
    Forwarded header trusted with X-Forwarded-* ones) is one line now, not a traceback once the index is loaded."""
    from waitress.adjustments import Adjustments

    from spklite.server import waitress_options

    try:
        Adjustments(**waitress_options(cfg))
    except ValueError as exc:  # host and port passed their own checks: what is left is about proxy headers
        key = "server.trusted-proxy-headers" if "header" in str(exc) else "host"
        value = cfg[key]
        raise ConfigError(
            f"{key}: {_shown(' '.join(value) if isinstance(value, list) else value)} is not allowed: {exc}"
        ) from None


FIRST_RUN_HEADER = """\
# spklite configuration, written on first run: every setting at its default, each with what it does.
# Change what you need here. Flags (spklite --help) and environment variables (SPKLITE_<KEY>) beat this file
# and are never saved into it. Relative paths in this file are taken from this file's folder.
"""


def write_first_run(cfg: Mapping[str, Any]) -> None:
    """When the config file is missing, write it with the defaults, not the effective values: a port given once
    by a flag, or a systemd override removed later, must not stick. A read-only place is fine, just logged."""
    config_file, home = cfg["config"], cfg["home"]
    if os.path.lexists(config_file):
        return
    temporary = f"{config_file}.{os.getpid()}.tmp"
    try:
        os.makedirs(home, exist_ok=True)
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(FIRST_RUN_HEADER + commented(defaults(home), os.path.dirname(config_file)))
        os.replace(temporary, config_file)  # atomic: never a half-written config
    except OSError as exc:
        log.info("could not write %s: %s", config_file, exc.strerror or exc)
        try:
            os.unlink(temporary)
        except OSError:
            pass
    else:
        log.info("wrote %s with the default settings: edit it to keep a setting", config_file)


def defaults(home: str) -> dict[str, Any]:
    """Every setting (home and config aside) at its default value, paths inside `home`."""
    return {s.key: _anchored(s.key, s.kind.parse(s.default), home) for s in SCHEMA if not s.meta}


# Output #####################################################################################################


def document(cfg: Mapping[str, Any], relative_to: str = "") -> dict[str, Any]:
    """The file-shaped config: {"spklite": {nested settings}}; paths inside `relative_to` written relative."""
    settings: dict[str, Any] = {}
    for setting in SCHEMA:
        if setting.meta:
            continue
        value = setting.kind.show(cfg[setting.key])
        if relative_to and setting.key in PATHS and value.startswith(relative_to.rstrip("/") + "/"):
            value = os.path.relpath(value, relative_to)
        *sections, leaf = setting.key.split(".")
        node = settings
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return {TOP_KEY: settings}


def dump(cfg: Mapping[str, Any], fmt: str = "yaml", *, relative_to: str = "") -> str:
    """The config as the text of a config file: YAML, or the same document as JSON."""
    data = document(cfg, relative_to)
    if fmt == "json":
        import json

        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return _yaml(data)
    raise ValueError(f"unknown format {fmt!r}")


def commented(cfg: Mapping[str, Any], relative_to: str = "") -> str:
    """The config as YAML with a comment above each setting: what it does, what it takes, its flag and variable."""
    settings = document(cfg, relative_to)[TOP_KEY]
    lines = [f"{TOP_KEY}:"]
    section = ""
    for setting in SCHEMA:  # the schema keeps each section's settings together, one level deep
        if setting.meta:
            continue
        here, _, leaf = setting.key.rpartition(".")
        if here != section:
            lines += ["", f"  {here}:"] if here else [""]  # top-level keys may follow a section
            section = here
        indent = "    " if here else "  "
        lines.append(f"{indent}# {setting.help} ({setting.flag}, {setting.env_names[0]})")
        lines.append(f"{indent}#   {setting.kind.allowed}")
        value = settings[here][leaf] if here else settings[leaf]
        lines += [indent + line for line in _yaml({leaf: value}).splitlines()]
    return "\n".join(lines) + "\n"


def _yaml(data: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Multi-line text (armoured keys) as readable YAML literal blocks."""

    Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def keyring_texts(cfg: Mapping[str, Any]) -> list[str]:
    """The armoured public keys for the catalog: inline entries as they are, files read (each block once)."""
    texts: list[str] = []
    for entry in cfg["keyrings"]:
        if is_armoured(entry):
            texts.append(entry)
            continue
        try:
            with open(entry, encoding="utf-8") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)  # characters: enough to tell a key file from a device
            blocks = re.findall(ARMOUR, data) if len(data) <= MAX_FILE_BYTES else []
        except OSError as exc:
            raise ConfigError(f"keyrings: cannot read '{entry}': {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            blocks = []
        if not blocks:
            raise ConfigError(
                f"keyrings: '{entry}' is not allowed: a file of at most {show_size(MAX_FILE_BYTES)} holding an "
                "ASCII-armoured public key (gpg --armor --export KEY)"
            )
        texts.extend(blocks)
    return texts
