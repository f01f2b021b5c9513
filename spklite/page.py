"""The web page for people opening the server's URL (SPEC 4).

It shows the Location to type in Package Center, a picker (model or
platform, DSM version, channel) and what that NAS would get. The list comes
from the same `Catalog.newest`/`Catalog.entry` the NAS answer uses, through
the same `Query.from_params`, so the page cannot disagree with the JSON; the
files it leaves out come with /v1/explain's reasons (spklite.explain).

The form's parameter names (model, platform, dsm, channel, view) are not the
NAS's (arch, build, unique): a browser submitting it still gets this page.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import namedtuple
from functools import lru_cache
from urllib.parse import urlencode, urlsplit

import bottle

from spklite import __version__, synology
from spklite.app import asset, channel_of
from spklite.catalog import Query, matches
from spklite.config import is_loopback
from spklite.explain import OFFERED, explain
from spklite.index import printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

    Get = Callable[[str], Optional[str]]

# ("7.3", 86009), ("7.2", 72806), ... newest first: each release with its newest known build.
DSM_OPTIONS: Tuple[Tuple[str, int], ...] = tuple((f"{ma}.{mi}", build) for (ma, mi), build in synology.NEWEST_BUILDS)
PLATFORMS = tuple(sorted(set(synology.PLATFORM_FAMILY) | synology.PLATFORMS_WITHOUT_FAMILY))
CHANNELS = ("stable", "beta")


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return asset(name).decode("utf-8")


@lru_cache(maxsize=None)
def _template() -> bottle.SimpleTemplate:
    return bottle.SimpleTemplate(source=_asset("page.tpl"))


class Choice(namedtuple("Choice", "title platform dsm build channel unique")):
    """A NAS described by the form, as the catalog request it would send."""

    __slots__ = ()
    title: str  # "DS918+ (apollolake)" or "platform apollolake"
    platform: str
    dsm: str
    build: int
    channel: str
    unique: str

    def nas_params(self) -> Dict[str, str]:
        major, minor = self.dsm.split(".")[:2]
        params = {
            "arch": self.platform,
            "build": str(self.build),
            "major": major,
            "minor": minor,
            "package_update_channel": self.channel,
        }
        if self.unique:
            params["unique"] = self.unique
        return params


def unique_of(name: str, platform: str) -> str:
    """The `unique` a model sends: synoinfo.conf drops the "DS" prefix
    (DS918+ -> synology_apollolake_918+) but keeps others (rs3617xs)."""
    name = name.lower().replace(" ", "")
    if name.startswith("ds"):
        name = name[2:]
    return f"synology_{platform}_{name}"


def find_model(models: List[Dict[str, Any]], typed: str) -> Optional[Tuple[Dict[str, Any], str]]:
    """The model a person typed, and its name as typed: "RS2418RP+" is one of "RS2418+/RS2418RP+"."""
    wanted = typed.lower().replace(" ", "")
    for candidate in (wanted, "ds" + wanted):
        for model in models:
            names = str(model["model"]).split("/")
            for name in (*names, str(model["model"])):
                if name.lower().replace(" ", "") == candidate:
                    return model, name if name in names else names[0]
    return None


def pick(models: List[Dict[str, Any]], get: Get) -> Tuple[Optional[Choice], List[str]]:
    """The NAS the form describes (None when nothing usable was picked) and
    messages for the visitor about values that could not be used."""
    messages: List[str] = []
    model_text = (get("model") or "").strip()
    platform = synology.normalize_platform(get("platform") or "")
    dsm = (get("dsm") or "").strip()
    channel = (get("channel") or "stable").strip().lower()

    title = ""
    unique = ""
    if model_text:
        found = find_model(models, model_text)
        if found is None:
            messages.append(f"Unknown NAS model “{model_text}”: pick one from the list, or choose a platform.")
        else:
            model, name = found
            if platform and platform != synology.normalize_platform(str(model["platform"])):
                messages.append(
                    f"{model['model']} is a {model['platform']} NAS: the platform choice "
                    f"{platform} was ignored (clear the model to pick a platform)."
                )
            platform = synology.normalize_platform(str(model["platform"]))
            title = f"{name} ({platform})"
            unique = unique_of(name, str(model["platform"]))
    if not title and platform:
        if platform in PLATFORMS:
            title = f"platform {platform}"
        else:
            messages.append(f"Unknown platform “{platform}”: pick one from the list.")
    builds = dict(DSM_OPTIONS)
    dsm = ".".join(dsm.split(".")[:2])  # "7.2.2" (older links) is release 7.2
    if dsm and dsm not in builds:
        messages.append(f"Unknown DSM version “{dsm}”: pick one from the list.")
        title = ""
    if channel not in CHANNELS:
        messages.append(f"Unknown channel “{channel}”: use stable or beta.")
        title = ""
    if not title:
        if (dsm or get("channel")) and not messages:
            messages.append("Pick a NAS model or a platform to see what that NAS gets.")
        return None, messages
    dsm = dsm or DSM_OPTIONS[0][0]
    return Choice(title, platform, dsm, builds[dsm], channel, unique), messages


def human_size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def dsm_range(info: Mapping[str, str]) -> str:
    """ "DSM 7.0+" / "DSM 6.0–6.2" / "any DSM" from os_min_ver (or firmware) and os_max_ver."""
    low = synology.parse_firmware(info.get("os_min_ver")) or synology.parse_firmware(info.get("firmware"))
    high = synology.parse_firmware(info.get("os_max_ver"))
    low_text = f"{low.major}.{low.minor}" if low else ""
    if high:
        return f"DSM {low_text or '?'}–{high.major}.{high.minor}"
    return f"DSM {low_text}+" if low else "any DSM"


def item(obj: Mapping[str, Any], offer: Any) -> Dict[str, Any]:
    """What the template shows for one package, from its catalog entry."""
    info = offer.record.package.info
    retina = obj.get("thumbnail_retina") or []
    return {
        "name": obj["dname"],
        "package": obj["package"],
        "version": obj["version"],
        "desc": obj["desc"],
        "icon": obj["thumbnail"][0],
        "icon2x": retina[0] if retina else "",
        "link": obj["link"],
        "size": human_size(obj["size"]),
        "downloads": obj["download_count"],
        "dsm": dsm_range(info),
        "arch": info.get("arch", ""),
        "beta": offer.beta,
        "yanked": bool(obj.get("yanked")),
        "file": printable(offer.record.path),
        "warnings": offer.record.package.warnings,
    }


def lan_addresses() -> List[str]:
    """This machine's IPv4 addresses on its network interfaces (no loopback, no link-local), Linux only."""
    import fcntl
    import struct

    found: List[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:  # SIOCGIFADDR: the interface's IPv4 address, asked of the kernel (no traffic)
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = ipaddress.ip_address(packed[20:24])
            if not (address.is_loopback or address.is_link_local) and str(address) not in found:
                found.append(str(address))
    return found


def reachable_locations(location: str) -> List[str]:
    """When `location` names this machine by a loopback address, the Locations a NAS could use instead."""
    parts = urlsplit(location)
    if not is_loopback(parts.hostname or ""):
        return []
    port = f":{parts.port}" if parts.port else ""
    return [f"{parts.scheme}://{address}{port}/" for address in lan_addresses()]


def render(server: Any, get: Get) -> str:
    channel = channel_of(bottle.request.environ)
    _, catalog = server.catalog(channel)
    links = server.links(bottle.request.environ)
    choice, messages = pick(server.models, get)
    if choice is not None and channel.beta:  # a beta channel's NAS is on the beta channel, whatever it asks
        choice = choice._replace(channel="beta")
    view = (get("view") or "").strip()
    if view not in ("", "files"):
        messages.append(f"Unknown view “{view}”.")
        view = ""
    search = (get("q") or "").strip()
    nas_link = explain_link = ""
    not_offered: List[Any] = []
    if choice is not None and view != "files":
        query = Query.from_params(choice.nas_params().get)
        dsm7 = choice.build >= synology.DSM7_BUILD
        items = [item(catalog.entry(o, query.language, links, dsm7), o)
                 for o in catalog.newest(query) if matches(o, search)]
        # The same decisions as /v1/explain, for the files the list leaves out.
        not_offered = [d for d in explain(catalog, query) if d.rule != OFFERED
                       and (matches(d.offer, search) if d.offer else search.lower() in d.file.lower())]
        nas_link = "./?" + urlencode(choice.nas_params())
        explain_link = "v1/explain?" + urlencode(choice.nas_params())
    else:  # every file, or (nothing picked yet) the newest version of every package, whatever NAS it is for
        offers = catalog.offers if view == "files" else catalog.latest(catalog.offers)
        items = [item(catalog.file_object(o, links), o) for o in offers if matches(o, search)]
    # The search form keeps the rest of the view: the NAS picked, the files view.
    keep = {k: v for k, v in (("model", get("model")), ("platform", get("platform")), ("dsm", get("dsm")),
                              ("channel", get("channel")), ("view", view)) if v and (choice or k == "view")}
    location = links.base.rstrip("/") + "/"
    return _template().render(
        css=_asset("style.css"),
        version=__version__,
        location=location,
        loopback=is_loopback(urlsplit(location).hostname or ""),
        reachable=reachable_locations(location),
        listen_host=server.cfg["host"] if is_loopback(server.cfg["host"]) else "",
        folder=printable(server.cfg["filesystem.packages"]),
        watching=server.watch_mode() != "off",
        total=len(catalog.offers),
        rejected=[r._replace(path=printable(r.path)) for r in catalog.rejected],
        channel=channel,
        base=links.base[:len(links.base) - len(channel.prefix)],  # the server's own URL, for the other channels
        sources=[c for c in server.channels.public() if c["prefix"] != channel.prefix + "/"],
        models=server.models,
        platforms=PLATFORMS,
        families=synology.PLATFORM_FAMILY,
        dsm_options=[label for label, _ in DSM_OPTIONS],
        channels=CHANNELS,
        form={
            "model": (get("model") or "").strip(),
            "platform": (get("platform") or "").strip().lower(),
            "dsm": (get("dsm") or "").strip(),
            "channel": (get("channel") or "stable").strip().lower(),
        },
        choice=choice,
        messages=messages,
        view=view,
        items=items,
        nas_link=nas_link,
        explain_link=explain_link,
        not_offered=not_offered,
        search=search,
        keep=keep,
        unfiltered="./?" + urlencode(keep),
    )
