"""A NAS request + an index state -> the Package Center answer (SPEC 1.2-1.5, 1.8).

Pure: no I/O, no threads. Everything that does not depend on the request is
computed once per index state (`Offer`); answers are memoised per request key.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from bisect import bisect_right
from collections import OrderedDict, namedtuple
from functools import lru_cache
from urllib.parse import quote

from spklite import synology
from spklite.index import printable
from spklite.spk import truth

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

DEFAULT_FIELDS = ("maintainer", "maintainer_url", "distributor", "distributor_url", "support_url")
OPTIONAL_BOOLS = ("silent_install", "silent_upgrade", "silent_uninstall")
MEMO_ENTRIES = 256
EDITED = 256  # files changed up to which a state's catalog is the previous one edited (see Catalog._edit)
MEMO_BYTES = 2 << 20  # a 1,000-package answer is ~60 KB: memory stays bounded on a small device (issue 12)
GZIP_LEVEL = 6  # zlib's default
# Requests as received, each naming its memo entry (see Catalog.remembered): ~200 characters each.
SEEN_ENTRIES = 1024
SEEN_CHARS = 256 << 10


def is_beta(info: Mapping[str, str]) -> bool:
    return bool(truth(info.get("beta"))) or bool(info.get("report_url", "").strip())


# The files of a package repeat their arch and model lists: one tuple for each (~0.1 MiB at 1,000 files).
@lru_cache(maxsize=1024)
def tokens(value: Optional[str]) -> Tuple[str, ...]:
    return tuple(value.lower().split()) if value else ()


# The files of a package have the same INFO keys: one set for them all, made once per file, not per index state.
@lru_cache(maxsize=1024)
def languages_of(keys: Tuple[str, ...]) -> frozenset:
    """The languages an INFO has texts in (displayname_fre, description_ger, ...)."""
    return frozenset(key.partition("_")[2] for key in keys if key.startswith(("displayname_", "description_")))


@lru_cache(maxsize=1024)
def platforms(value: Optional[str]) -> Tuple[str, ...]:
    """An INFO arch or exclude_arch list as normalized platforms."""
    return tuple(synology.normalize_platform(token) for token in tokens(value))


class Offer:
    """One package file, with everything the catalog needs precomputed (made once per file, kept across states)."""

    # Slots: one of these per file, built at every start-up; a plain class builds in a fraction of a
    # frozen dataclass's time and holds no __dict__.
    __slots__ = ("record", "package", "arch", "exclude_arch", "models", "exclude_models",
                 "min_build", "min_major", "max_build", "beta", "version_key", "languages")

    def __init__(self, record: Any):  # record: index.Record
        info = record.package.info
        minimum = synology.parse_firmware(info.get("os_min_ver")) or synology.parse_firmware(info.get("firmware"))
        maximum = synology.parse_firmware(info.get("os_max_ver"))
        self.record = record
        self.package: str = info["package"]
        self.arch = platforms(info.get("arch"))
        self.exclude_arch = platforms(info.get("exclude_arch"))
        self.models = tokens(info.get("model"))
        self.exclude_models = tokens(info.get("exclude_model"))
        self.min_build = minimum.build if minimum else 0
        self.min_major = minimum.major if minimum else 0
        self.max_build: Optional[int] = maximum.build if maximum else None
        self.beta = is_beta(info)
        self.version_key = synology.version_key(info["version"])
        self.languages = languages_of(tuple(info))

    def verdict(self, query: "Query") -> Union[int, str]:
        """This file's arch-match rank (1-3) when it is a candidate for the query, else the code of the
        first rule that excludes it (explain.RULES). The one place SPEC 1.4's rules are written: the NAS
        answer, /v1/explain, the page and `check` all decide through it."""
        rank = synology.arch_match(self.arch, query.platform)
        if not rank:
            return "platform"
        if query.platform in self.exclude_arch:
            return "exclude_arch"
        if self.models and query.unique not in self.models:
            return "model"
        if query.unique and query.unique in self.exclude_models:
            return "exclude_model"
        build = query.build or 0
        # The generation before the build range: for a DSM 6 NAS, "a DSM 7 file" says more than "build 40000".
        if (build >= synology.DSM7_BUILD) != (self.min_major >= 7):
            return "dsm6_file" if build >= synology.DSM7_BUILD else "dsm7_file"
        if self.min_build > build:
            return "min_build"
        if self.max_build is not None and build > self.max_build:
            return "max_build"
        if self.beta and not query.beta_channel:
            return "beta"
        return rank


class Query(namedtuple("Query", "build platform language beta_channel unique")):
    """The parts of a NAS request that decide the answer."""

    __slots__ = ()
    build: Optional[int]
    platform: str
    language: str
    beta_channel: bool
    unique: str

    @classmethod
    def from_params(cls, get: Callable[[str], Optional[str]]) -> "Query":
        """Lenient parsing (SPEC 1.1/1.2): malformed values match less, never fail."""
        build = _int(get("build"))
        if build is None:
            major, minor = _int(get("major")), _int(get("minor"))
            if major is not None:
                build = synology.first_build(major, minor)
        return cls(
            build=build,
            platform=synology.normalize_platform(get("arch") or ""),
            language=(get("language") or "").strip().lower(),
            beta_channel=(get("package_update_channel") or "").strip().lower() == "beta",
            # DSM sends `synology_x86_411+II` with a raw `+`, which form decoding makes a space (SPEC 1.4).
            unique=(get("unique") or "").replace(" ", "+").strip().lower(),
        )


def _int(value: Optional[str]) -> Optional[int]:
    value = (value or "").strip()
    # isascii: str.isdigit() also takes "²", which int() refuses.
    return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None


class Links(namedtuple("Links", "base download static default_icon download_url static_url",
                         defaults=("", ""))):
    """How URLs are formed for one answer: base URL and route prefixes, or the operator's URLs elsewhere."""

    __slots__ = ()
    base: str  # "http://host:port"
    download: str  # "/download"
    static: str  # "/static"
    default_icon: str  # blob name of the bundled default icon
    download_url: str  # "https://cdn.example.com/spk" (router.download-url), or "": this server
    static_url: str  # the same for blobs (router.static-url)

    def file(self, path: str) -> str:
        return f"{self.download_url or self.base + self.download}/{url_path(path)}"

    def blob(self, name: str) -> str:
        # The bundled default icon is no blob of the cache folder, which static_url's copy is made from.
        if self.static_url and name != self.default_icon:
            return f"{self.static_url}/{quote(name)}"
        return f"{self.base}{self.static}/{quote(name)}"


def url_path(path: str) -> str:
    """An index key as a URL path: the name's bytes, percent-encoded (a name that is not UTF-8, or holds CR/LF,
    still has a URL)."""
    return quote(os.fsencode(path), safe="/")


class Catalog:
    """The answers for one index state, memoised (bounded by count and bytes)."""

    memo_misses = 0  # answers computed, all catalogs of the process (/metrics): counted where they are made

    def __init__(self, records: Iterable[Any], settings: Mapping[str, Any], previous: Optional["Catalog"] = None,
                 rejected: Iterable[Any] = (), yanked: Iterable[str] = (),
                 downloads: Optional[Mapping[str, int]] = None):
        # Records the previous state had too keep their offer: only changed files cost work. (The previous
        # catalog holds its records: an id found is that record's, never a reused one.)
        known: Dict[int, Offer] = {id(o.record): o for o in previous.offers} if previous else {}
        kept: List[Offer] = []
        fresh: List[Offer] = []
        for record in records:
            offer = known.pop(id(record), None)
            if offer is None:
                fresh.append(Offer(record))
            else:
                kept.append(offer)
        self.rejected: List[Any] = sorted(rejected, key=lambda r: r.path)  # index.Rejected: for explain
        self.yanked = frozenset(yanked)  # index keys (spklite.yank): on disk, never offered
        self.downloads: Mapping[str, int] = downloads or {}  # index key -> download count (spklite.counts)
        self.settings = settings
        self.keyrings: List[str] = list(settings.get("keyrings", ()))
        self.defaults: Dict[str, str] = {
            field: settings.get("defaults." + field.replace("_", "-"), "") for field in DEFAULT_FIELDS
        }
        self.with_md5 = bool(settings.get("md5", True))
        # The offers by (arch token, DSM 7 file), in path order: a NAS's candidates are those for its platform,
        # its family and noarch, of its DSM generation, so a memo miss looks at these, not at every file.
        self.groups: Dict[Tuple[str, bool], List[Offer]] = {}
        if previous is not None and len(fresh) + len(known) <= EDITED:
            self._edit(previous, fresh, list(known.values()))  # known: the offers of records now gone
        else:
            self._build(kept + fresh)
        self._memo: "OrderedDict[tuple, bytes]" = OrderedDict()
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()
        self._seen: "OrderedDict[Tuple[str, ...], Tuple[tuple, Query]]" = OrderedDict()  # see remembered
        self._seen_chars = 0

    def _build(self, offers: List[Offer]) -> None:
        self.offers: List[Offer] = sorted(offers, key=lambda o: (o.package, o.record.path))
        self.uses_models = any(o.models or o.exclude_models for o in self.offers)
        # What the answer's key is made of (see answer): the builds where some answer changes, the languages
        # some INFO has texts in.
        self.build_steps = sorted({synology.DSM7_BUILD, synology.DICT_SHAPE_BUILD}
                                  | {o.min_build for o in self.offers}
                                  | {o.max_build + 1 for o in self.offers if o.max_build is not None})
        self.languages = frozenset().union(*(o.languages for o in self.offers))
        for offer in self.offers:
            for key in group_keys(offer):
                self.groups.setdefault(key, []).append(offer)

    def _edit(self, previous: "Catalog", fresh: List[Offer], gone: List[Offer]) -> None:
        """The previous catalog's offers, groups and memo keys with a few files added and removed: at 50,000
        files a full build costs ~0.2 s, this a few ms. What a removed file brought to the memo keys (a build
        step, a language) stays: such keys are only finer than needed, never wrong."""
        self.offers = list(previous.offers)  # copies: the previous catalog may be answering meanwhile
        self.groups = dict(previous.groups)
        for offer in gone:
            self.offers.remove(offer)
            for key in group_keys(offer):
                self._group(key, previous).remove(offer)
        for offer in fresh:
            insert_sorted(self.offers, offer)
            for key in group_keys(offer):
                insert_sorted(self._group(key, previous), offer)
        self.uses_models = previous.uses_models or any(o.models or o.exclude_models for o in fresh)
        self.build_steps = sorted({*previous.build_steps, *(o.min_build for o in fresh),
                                   *(o.max_build + 1 for o in fresh if o.max_build is not None)})
        self.languages = previous.languages.union(*(o.languages for o in fresh))

    def _group(self, key: Tuple[str, bool], previous: "Catalog") -> List[Offer]:
        """This catalog's own copy of a group, made when first changed."""
        group = self.groups.get(key)
        if group is None or group is previous.groups.get(key):
            group = self.groups[key] = list(group or ())
        return group

    # -- the NAS answer --------------------------------------------------------

    def answer(self, query: Query, links: Links, debug: Optional[Dict[str, str]] = None, gzip: bool = False,
               request: Optional[Tuple[str, ...]] = None) -> bytes:
        """The JSON body for a catalog request, memoised per (query, links); with `gzip`, compressed, and
        memoised so (compression is paid once per index state and question).

        `request`: the request's inputs as received (strings) from which query, links and gzip were parsed; it
        is remembered as naming this memo entry, so that the same request is answered by `remembered`.
        """
        if debug is not None:
            plain = self._render(query, links, debug)
            return gzipped(plain) if gzip else plain
        # The key holds only what changes the answer, so that distinct but equivalent questions (any build
        # between two steps, a language no package has texts in, `unique` when no package names models)
        # share one entry.
        key = (
            None if query.build is None else bisect_right(self.build_steps, query.build),
            query.platform,
            query.language if query.language in self.languages else "",
            query.beta_channel,
            query.unique if self.uses_models else "",
            links,
            gzip,
        )
        body = self._memo.get(key)
        if body is None:
            if gzip:  # compressed from the plain answer when the memo holds it
                body = gzipped(self._memo.get(key[:-1] + (False,)) or self._render(query, links, None))
            else:
                body = self._render(query, links, None)
            with self._memo_lock:  # only on a miss: answers being computed
                Catalog.memo_misses += 1
                self._memo[key] = body
                self._memo_bytes += len(body)
                while self._memo and (len(self._memo) > MEMO_ENTRIES or self._memo_bytes > MEMO_BYTES):
                    self._memo_bytes -= len(self._memo.popitem(last=False)[1])
        if request is not None and request not in self._seen:
            self._remember(request, key, query)
        return body

    def _remember(self, request: Tuple[str, ...], key: tuple, query: Query) -> None:
        with self._memo_lock:
            if request not in self._seen:  # counted once, whichever thread comes first
                self._seen[request] = (key, query)
                self._seen_chars += sum(map(len, request))
                while len(self._seen) > SEEN_ENTRIES or self._seen_chars > SEEN_CHARS:
                    self._seen_chars -= sum(map(len, self._seen.popitem(last=False)[0]))

    def remembered(self, request: Tuple[str, ...]) -> Optional[Tuple[bytes, bool, Query]]:
        """The memoised answer to a request seen before as exactly these inputs, whether it is gzipped, and the
        query it was parsed into (None: parse it). It is the memo's own entry, the one the parsed inputs name:
        the memo's bound holds, and when the memo has let the answer go, so has this."""
        seen = self._seen.get(request)
        if seen is None:
            return None
        key, query = seen
        body = self._memo.get(key)
        return None if body is None else (body, key[-1], query)

    def _render(self, query: Query, links: Links, debug: Optional[Dict[str, str]]) -> bytes:
        if query.build is None:
            return encode({"packages": []})
        dsm7 = query.build >= synology.DSM7_BUILD
        entries = [self.entry(o, query.language, links, dsm7) for o in self.newest(query)]
        if debug is not None:
            from spklite import explain  # here: only the debugging aid needs it

            entries.append(debug_entry(debug, links, explain.summary(explain.explain(self, query))))
        if query.build < synology.DICT_SHAPE_BUILD:
            return encode(entries)
        if dsm7:
            return encode({"packages": entries})
        return encode({"packages": entries, "keyrings": self.keyrings})

    def newest(self, query: Query) -> List[Offer]:
        """The newest candidate file of each package id, ordered by package id."""
        # Groups in the order of arch_match's ranks: offers of equal score meet in the same group, in path order
        # (an offer met again in a lower group has its rank there too, and ties keep the first).
        seven = (query.build or 0) >= synology.DSM7_BUILD
        tokens = dict.fromkeys((query.platform, synology.PLATFORM_FAMILY.get(query.platform), "noarch"))
        groups = [self.groups.get((token, seven), ()) for token in tokens if token]
        # A verdict that is not a rank is the code of the rule that excludes the file.
        return newest_per_package((o, rank) for group in groups for o in group
                                  if isinstance(rank := self.verdict(o, query), int))

    def latest(self, offers: Iterable[Offer]) -> List[Offer]:
        """The newest file of each package among `offers`, whatever NAS it is for; yanked files left out."""
        return newest_per_package((o, 1) for o in offers if o.record.path not in self.yanked)

    def verdict(self, offer: Offer, query: Query) -> Union[int, str]:
        """Offer.verdict, with "yanked" first: yanking is the operator's word, above every INFO rule."""
        return "yanked" if offer.record.path in self.yanked else offer.verdict(query)

    # -- one entry (SPEC 1.5) ----------------------------------------------------

    def entry(self, offer: Offer, language: str, links: Links, dsm7: bool) -> Dict[str, Any]:
        record = offer.record
        pkg = record.package
        info = pkg.info
        entry: Dict[str, Any] = {
            "package": offer.package,
            "version": info["version"],
            "dname": display_name(info, language),
            "desc": info.get(f"description_{language}") or info.get("description") or "",
            "link": links.file(record.path),
            "size": record.size,
        }
        if self.with_md5 and record.md5:
            entry["md5"] = record.md5
        icons = [name for name in (pkg.icon, pkg.icon_256) if name]
        entry["thumbnail"] = [links.blob(n) for n in icons] or [links.blob(links.default_icon)]
        if pkg.icon_256:
            entry["thumbnail_retina"] = [links.blob(pkg.icon_256)]
        entry["snapshot"] = [links.blob(n) for n in pkg.screenshots]

        startable = truth(info.get("startable")) is not False and truth(info.get("ctl_stop")) is not False
        qinst = _flag(info, "qinst", not pkg.has_license and not pkg.install_wizard)
        entry["qinst"] = qinst
        entry["qupgrade"] = _flag(info, "qupgrade", not pkg.has_license and not pkg.upgrade_wizard)
        entry["qstart"] = qstart = _flag(info, "qstart", qinst and startable)
        entry["deppkgs"] = info.get("install_dep_packages")
        entry["conflictpkgs"] = info.get("install_conflict_packages")
        entry["depsers"] = info.get("install_dep_services")
        entry["download_count"] = self.downloads.get(record.path, 0)
        entry["recent_download_count"] = entry["price"] = 0
        entry["start"] = qstart
        if "startable" in info or "ctl_stop" in info:
            entry["startable"] = "yes" if startable else "no"
        for field in DEFAULT_FIELDS:
            value = info.get(field) or self.defaults[field]
            if value:
                entry[field] = value
        if info.get("changelog"):
            entry["changelog"] = info["changelog"]
        for field in OPTIONAL_BOOLS:
            if field in info:
                entry[field] = bool(truth(info[field]))
        if "auto_upgrade_from" in info:
            entry["auto_upgrade_from"] = info["auto_upgrade_from"]
        if offer.beta and not dsm7:
            # DSM 7 hides third-party packages flagged beta: serve them unflagged there.
            entry["beta"] = True
            if info.get("report_url"):
                entry["report_url"] = info["report_url"]
        return entry

    # -- the /v1 API ------------------------------------------------------------

    def files(
        self,
        links: Links,
        *,
        platform: str = "",
        name: str = "",
        latest: bool = False,
        language: str = "",
    ) -> List[Dict[str, Any]]:
        """Every package file (SPEC 1.7 /v1/packages), filtered."""
        platform = synology.normalize_platform(platform)
        chosen = [o for o in self.offers
                  if (not platform or synology.arch_match(o.arch, platform)) and matches(o, name, language)]
        if latest:
            chosen = self.latest(chosen)
        return [self.file_object(o, links, language) for o in chosen]

    def file_object(self, offer: Offer, links: Links, language: str = "") -> Dict[str, Any]:
        info = offer.record.package.info
        obj = self.entry(offer, language, links, dsm7=True)
        obj.update(
            file=printable(offer.record.path),
            arch=info.get("arch", ""),
            os_min_ver=info.get("os_min_ver") or info.get("firmware") or "",
            os_max_ver=info.get("os_max_ver", ""),
            beta=offer.beta,
            yanked=offer.record.path in self.yanked,
        )
        if offer.beta and info.get("report_url"):
            obj["report_url"] = info["report_url"]
        return obj


def group_keys(offer: Offer) -> List[Tuple[str, bool]]:
    """The groups an offer is in (Catalog.groups): its arch tokens, for its DSM generation."""
    seven = offer.min_major >= 7
    return [(token, seven) for token in offer.arch]


def insert_sorted(offers: List[Offer], offer: Offer) -> None:
    """Insert into a list ordered by (package id, path), in its place (bisect's key= is Python 3.10+)."""
    key = (offer.package, offer.record.path)
    low, high = 0, len(offers)
    while low < high:
        middle = (low + high) // 2
        other = offers[middle]
        if (other.package, other.record.path) < key:
            low = middle + 1
        else:
            high = middle
    offers.insert(low, offer)


def newest_per_package(candidates: Iterable[Tuple[Offer, int]]) -> List[Offer]:
    """Of (offer, arch-match rank) pairs, the best offer of each package id, ordered by id (SPEC 1.4).

    Rank 0 is no candidate. Newest version first, then the higher minimum build,
    then the better arch match; offers come sorted by path, so the first path wins ties.
    """
    best: Dict[str, Tuple[tuple, Offer]] = {}
    for offer, rank in candidates:
        if not rank:
            continue
        score = (offer.version_key, offer.min_build, rank)
        current = best.get(offer.package)
        if current is None or score > current[0]:
            best[offer.package] = (score, offer)
    return [best[name][1] for name in sorted(best)]


def matches(offer: Offer, name: str, language: str = "") -> bool:
    """The name filter of /v1/packages and the page's search: a substring of the package id or display name,
    any case; an empty name matches all."""
    name = name.lower()
    return not name or name in offer.package.lower() or name in display_name(offer.record.package.info,
                                                                               language).lower()


def display_name(info: Mapping[str, str], language: str) -> str:
    return info.get(f"displayname_{language}") or info.get("displayname") or info["package"]


def _flag(info: Mapping[str, str], key: str, default: bool) -> bool:
    value = truth(info.get(key))
    return default if value is None else value


def debug_entry(debug: Dict[str, str], links: Links, summary: List[str]) -> Dict[str, Any]:
    """A pseudo-package that shows the operator what the NAS sent (SPEC 1.8), then what it was offered and why
    not the rest (`summary`: explain.summary)."""
    import html  # here: its entity table costs ~0.4 MiB, and only this debugging aid needs it

    lines = ["What this NAS sent:"] + [f"{k}={v}" for k, v in debug.items()] + [""] + summary
    return {
        "package": "spklite-debug",
        "version": "0.0-0",
        "dname": "spklite debug",
        "desc": "<br>".join(html.escape(line, quote=False) for line in lines),
        "link": "",
        "size": 0,
        "thumbnail": [links.blob(links.default_icon)],
        "snapshot": [],
        "qinst": False,
        "qupgrade": False,
        "qstart": False,
        "deppkgs": None,
        "conflictpkgs": None,
        "depsers": None,
        "download_count": 0,
        "recent_download_count": 0,
        "price": 0,
        "start": False,
        "maintainer": "spklite",
    }


def gzipped(body: bytes) -> bytes:
    """`body` as gzip data, the same bytes from every replica (same zlib): zlib writes the gzip header itself,
    without a time or a name (gzip.compress wrote other header bytes before Python 3.11)."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip wrapper, the largest window
    return packer.compress(body) + packer.flush()


def encode(value: Any) -> bytes:
    """Strict, ASCII-only JSON (DSM's parser rejects the whole source on one bad escape)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")
