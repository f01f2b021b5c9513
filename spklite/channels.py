"""Channels: one server, several package sources, told apart by a URL prefix (issue 13).

`/` is the main catalog: the files in no channel folder. `router.beta` (default /beta) serves the same files as
the beta channel whatever the NAS asks: DSM 7 has no beta switch, and hides files flagged beta (the catalog
serves them unflagged there, SPEC 1.5). Each entry of `channels` maps a prefix to a sub-folder of the packages
folder: its files are offered at that prefix and nowhere else. A prefix /s/<token> is a secret one, a private
source: shown nowhere public and masked in the access log.

spklite.app's CatalogFront moves a request's prefix from PATH_INFO to SCRIPT_NAME and leaves its Channel in the
environ (ENVIRON_KEY): every route works under every prefix, and the catalog, its links and the downloads
follow the channel.
"""

from __future__ import annotations

import os
import re
from collections import namedtuple

from spklite.config import (
    CHANNELS_ALLOWED,
    RESERVED_PREFIXES,
    ConfigError,
    Refused,
    _storable,
    load_yaml,
    overlap,
    parse_bool,
)

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

ENVIRON_KEY = "spklite.channel"
SECRET = "s"  # /s/<token>
MIN_TOKEN = 22  # characters: 128 bits of secrets.token_urlsafe
TOKEN = re.compile(r"[A-Za-z0-9_-]{%d,256}" % MIN_TOKEN)
SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
ROUTES = RESERVED_PREFIXES + ("packages",)  # first path segments the app routes itself
SECRET_IN_PATH = re.compile(r"^/s/[^/?]*")


class Channel(namedtuple("Channel", "prefix folder beta")):
    __slots__ = ()
    prefix: str  # "" for "/"; else "/beta", "/testing", "/s/<token>": no trailing slash
    folder: Optional[str]  # its files' index-key folder ("testing", "a/b"); None: the main catalog
    beta: bool  # the beta channel, whatever the NAS asks

    @property
    def secret(self) -> bool:
        return self.prefix.startswith(f"/{SECRET}/")

    @property
    def shown(self) -> str:
        return shown_prefix(self.prefix)


MAIN = Channel("", None, False)


def shown_prefix(prefix: str) -> str:
    """A prefix ("/testing", "/testing/") as a URL path ("/testing/"), a secret token masked: for logs and
    public places."""
    prefix = prefix.rstrip("/")
    return f"/{SECRET}/***/" if prefix.startswith(f"/{SECRET}/") else prefix + "/"


def under(path: str, prefix: str) -> bool:
    """Whether a URL path is `prefix` or lies below it: "/beta" and "/beta/x", not "/betamax"."""
    return path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in ("", "/")


def mask(path: str) -> str:
    """A request path for the access log: a secret prefix's token masked (a wrong guess's too)."""
    return SECRET_IN_PATH.sub(f"/{SECRET}/***", path)


# The setting ################################################################################################


def parse(raw: Any) -> Dict[str, Dict[str, Any]]:
    """The `channels` setting: {"/prefix/": {"folder": "sub/folder", "beta": bool}}, every rule that needs no
    other setting checked (check() does the rest). A flag or variable gives the mapping as YAML flow text."""
    if isinstance(raw, str):
        text = _storable(raw.strip())
        if not text:
            return {}
        import yaml

        try:
            raw = load_yaml(text)
        except yaml.YAMLError:
            raise Refused(f"'{_cut(text)}' is not allowed: {CHANNELS_ALLOWED}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Refused(f"'{_cut(str(raw))}' is not allowed: {CHANNELS_ALLOWED}")
    channels: Dict[str, Dict[str, Any]] = {}
    for key, value in raw.items():
        prefix = parse_prefix(key)
        shown = shown_prefix(prefix)
        if isinstance(value, str):
            value = {"folder": value}
        if not isinstance(value, dict) or set(value) - {"folder", "beta"} or "folder" not in value:
            raise Refused(f"'{shown}' is not allowed: a sub-folder, or {{folder: SUB/FOLDER, beta: true|false}}")
        try:
            beta = parse_bool(value.get("beta", False))
        except (ValueError, TypeError):
            raise Refused(f"'{shown}': beta is true or false") from None
        folder = parse_folder(value["folder"], shown)
        for other, spec in channels.items():
            if overlap(spec["folder"], folder):
                raise Refused(f"'{shown}' is not allowed: its folder '{folder}' overlaps the folder "
                              f"'{spec['folder']}' of '{shown_prefix(other)}'")
        channels[prefix + "/"] = {"folder": folder, "beta": beta}
    found = clash(list(channels))
    if found:
        raise Refused(found[1])
    return channels


def show(channels: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """As the config file holds it: a plain folder where beta is off."""
    return {prefix: dict(spec) if spec["beta"] else spec["folder"] for prefix, spec in channels.items()}


def parse_prefix(raw: Any) -> str:
    """'/testing/', 'testing', '/s/<token>' -> '/testing', '/s/<token>'."""
    if not isinstance(raw, str):
        raise Refused(f"prefix '{_cut(str(raw))}' is not allowed: a URL path such as /testing/")
    segments = raw.strip().strip("/").split("/")
    if segments[0] == SECRET:
        if len(segments) != 2 or not TOKEN.fullmatch(segments[1]):
            raise Refused(f"prefix '/{SECRET}/…' is not allowed: a secret prefix is /{SECRET}/<token>/, the token "
                          f"{MIN_TOKEN} to 256 letters, digits, - or _ (python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(24))')")
    elif segments == [""] or not all(SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise Refused(f"prefix '{_cut(raw)}' is not allowed: a URL path such as /testing/ (letters, digits, "
                      ". _ ~ -), not /")
    elif segments[0].lower() in ROUTES:
        raise Refused(f"prefix '{_cut(raw)}' is not allowed: /{segments[0]} is a route of its own")
    return "/" + "/".join(segments)


def parse_folder(raw: Any, shown: str) -> str:
    """A sub-folder, relative to the packages folder, as an index key's folder part ('a/b')."""
    text = raw.strip() if isinstance(raw, str) else ""
    folder = os.path.normpath(text) if text else ""
    if not folder or "\0" in folder or os.path.isabs(folder) or folder == "." or folder.split("/")[0] == "..":
        raise Refused(f"'{shown}': folder '{_cut(str(raw))}' is not allowed: a sub-folder inside the packages "
                      "folder, relative to it (e.g. testing)")
    return folder


def _cut(text: str) -> str:
    """A refused value on one short line, any secret token in it masked."""
    text = re.sub(f"/{SECRET}/[A-Za-z0-9_-]+", f"/{SECRET}/***", text)
    text = " ".join(text.encode("utf-8", "backslashreplace").decode("utf-8").split())
    return text if len(text) <= 60 else text[:57] + "..."


def clash(prefixes: List[str], routes: Mapping[str, str] = {}) -> Optional[Tuple[str, str]]:  # noqa: B006
    """(the setting to blame, why) when a prefix would hide another's paths: '/a/' and '/a/b/', or a channel's
    and a route's ('/download'); else None. `routes` maps the other settings' names to their prefixes."""
    taken = [(p.rstrip("/"), "channels", f"'{shown_prefix(p)}'") for p in prefixes]
    taken += [(p, name, f"'{p}'") for name, p in routes.items() if p]
    for number, (prefix, key, label) in enumerate(taken):
        for other, other_key, other_label in taken[number + 1:]:
            if overlap(prefix, other):
                named = other_label if other_key == "channels" else f"{other_key} {other_label}"
                return key, f"{label} is not allowed: it clashes with {named}"
    return None


def check(cfg: Mapping[str, Any]) -> None:
    """The rules across settings: no channel prefix, nor router.beta's, hides a route's or another's."""
    from spklite.config import BY_KEY

    # router.beta first (blamed in a clash with a route) unless it is the default and the route is not
    names = ["router.beta", "router.download", "router.static"]
    if cfg["router.beta"] == BY_KEY["router.beta"].default:
        names.append(names.pop(0))
    names.append("router.accel-redirect")  # nginx's internal location: a channel must not hide it either
    found = clash(list(cfg["channels"]), {name: cfg[name] for name in names})
    if found:
        raise ConfigError(f"{found[0]}: {found[1]}")


# At run time ################################################################################################


class Channels:
    """The configured channels: which one a path is under, which files each serves."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.all: List[Channel] = [MAIN]
        if cfg["router.beta"]:
            self.all.append(Channel(cfg["router.beta"], None, True))
        self.all += [Channel(prefix[:-1], spec["folder"], spec["beta"]) for prefix, spec in cfg["channels"].items()]
        self.prefixed = self.all[1:]
        self.folders = tuple(c.folder for c in self.all if c.folder)

    def match(self, path: str) -> Optional[Tuple[Channel, str]]:
        """(the channel, the rest of the path) when `path` is under a channel's prefix."""
        for channel in self.prefixed:
            if under(path, channel.prefix):
                return channel, path[len(channel.prefix):]
        return None

    def folder_of(self, key: str) -> Optional[str]:
        """The channel folder an index key is in; None: the main catalog's."""
        for folder in self.folders:
            if key.startswith(folder + "/"):
                return folder
        return None

    def home(self, folder: Optional[str]) -> Channel:
        """The first channel that serves the files of `folder`: where links to them point."""
        return next(c for c in self.all if c.folder == folder)

    def serving(self, folder: Optional[str]) -> List[str]:
        """The prefixes that offer the files of `folder` ('/', '/beta/', ...), as /v1/packages shows them."""
        return [c.prefix + "/" for c in self.all if c.folder == folder]

    def public(self) -> List[Dict[str, Any]]:
        """The channels a visitor may know of (no secret ones), for /about, /health and the page."""
        return [{"prefix": c.prefix + "/", "folder": c.folder, "beta": c.beta} for c in self.all if not c.secret]
