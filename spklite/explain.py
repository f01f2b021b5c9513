"""Why a NAS gets, or does not get, each package file; and which NAS one file reaches.

Words around the catalog's own decisions, never a second copy of its rules: `Offer.verdict` says whether a
file is a candidate (or the one rule that excludes it) and `Catalog.newest` which candidate is offered.
Pure, like the catalog: no I/O.
"""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

from spklite import synology
from spklite.catalog import Catalog, Offer, Query
from spklite.index import printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

OFFERED = "offered"
# The machine-readable rule codes: Offer.verdict's, then the ones only a whole answer can give.
RULES = {
    "yanked": "yanked by the operator (spklite unyank offers it again)",
    "platform": "its arch matches neither the NAS platform, nor its family, nor noarch",
    "exclude_arch": "its exclude_arch lists the NAS platform",
    "model": "its model list does not name this NAS",
    "exclude_model": "its exclude_model names this NAS",
    "min_build": "its minimum DSM build is above the NAS's build",
    "max_build": "its os_max_ver is below the NAS's build",
    "dsm6_file": "a file for DSM 6 or older: DSM 7 refuses it",
    "dsm7_file": "a file for DSM 7: DSM 6 and older cannot run it",
    "beta": "a beta file, and the NAS is on the stable channel",
    "older": "a newer version of the package is offered",
    "tie": "another file of the same version is offered (the tie rules of SPEC 1.4)",
    "rejected": "not a valid package file",
    "no_build": "the request has no usable build (nor major/minor): the answer is empty",
}
SUMMARY_LINES = 40  # the debug package's description: Package Center shows it in a small box


class Decision(namedtuple("Decision", "file package version rule reason offer")):
    """One file's fate for one NAS: `rule` is OFFERED or a RULES code; `offer` is None for a rejected file."""

    __slots__ = ()
    file: str
    package: Optional[str]
    version: Optional[str]
    rule: str
    reason: str
    offer: Optional[Offer]

    def to_json(self) -> Dict[str, Any]:
        return {"file": self.file, "package": self.package, "version": self.version,
                "offered": self.rule == OFFERED, "rule": self.rule, "reason": self.reason}


def explain(catalog: Catalog, query: Query, package: str = "") -> List[Decision]:
    """Every file of the catalog (of package id `package`, any case, when given) with its decision, ordered
    like the catalog (package id, path), then the rejected files (those whose name holds `package`)."""
    wanted = package.strip().lower()
    offers = [o for o in catalog.offers if not wanted or o.package.lower() == wanted]
    chosen = {o.package: o for o in catalog.newest(query)} if query.build is not None else {}
    decisions = []
    for offer in offers:
        verdict = "no_build" if query.build is None else catalog.verdict(offer, query)
        if isinstance(verdict, int):
            best = chosen[offer.package]
            verdict = OFFERED if best is offer else "older" if best.version_key > offer.version_key else "tie"
            reason = reason_text(offer, verdict, query, best)
        else:
            reason = reason_text(offer, verdict, query)
        info = offer.record.package.info
        decisions.append(Decision(printable(offer.record.path), offer.package, info["version"], verdict, reason,
                                  offer))
    for rejected in catalog.rejected:
        name = printable(rejected.path)
        if wanted in name.lower():
            decisions.append(Decision(name, None, None, "rejected", rejected.reason, None))
    return decisions


def reason_text(offer: Offer, rule: str, query: Query, best: Optional[Offer] = None) -> str:
    """The decision for one file in words, with the values that decided it."""
    info = offer.record.package.info
    platform, unique, build = query.platform, query.unique, query.build
    if rule == OFFERED:
        return "offered: the newest version of the package this NAS can use"
    if rule in ("older", "tie") and best is not None:
        other = f"{best.record.package.info['version']} ({printable(best.record.path)})"
        if rule == "older":
            return f"older than {other}, which is offered"
        return f"the same version as {other}, which is offered (tie rules: higher minimum build, closer arch " \
               "match, then path order)"
    if rule == "platform":
        if not platform:
            return f"arch “{info.get('arch', '')}”: the NAS sent no platform, only noarch files match"
        family = synology.family_of(platform)
        wanted = f"{platform}, its family {family}," if family and family != platform else platform
        return f"arch “{info.get('arch', '')}” names neither {wanted} nor noarch"
    if rule == "exclude_arch":
        return f"exclude_arch “{info.get('exclude_arch', '')}” lists {platform}"
    if rule == "model":
        return f"model “{info.get('model', '')}” does not name {unique or 'this NAS (it sent no unique)'}"
    if rule == "exclude_model":
        return f"exclude_model “{info.get('exclude_model', '')}” names {unique}"
    if rule == "min_build":
        return f"needs DSM build {offer.min_build} or later ({_minimum_text(info)}); this NAS has build {build}"
    if rule == "max_build":
        return f"os_max_ver {info.get('os_max_ver')} ends at build {offer.max_build}; this NAS has build {build}"
    if rule == "dsm6_file":
        minimum = _minimum_text(info) if offer.min_build else "no os_min_ver"
        return f"a file for DSM 6 or older ({minimum}): DSM 7 refuses it"
    if rule == "dsm7_file":
        return f"a file for DSM 7 ({_minimum_text(info)}): DSM 6 and older cannot run it"
    if rule == "beta":
        return "a beta file (INFO beta or report_url), and this NAS is on the stable channel"
    return RULES[rule]


def _minimum_text(info: Mapping[str, str]) -> str:
    if synology.parse_firmware(info.get("os_min_ver")):
        return f"os_min_ver {info['os_min_ver']}"
    return f"firmware {info.get('firmware')}"


def summary(decisions: List[Decision], limit: int = SUMMARY_LINES) -> List[str]:
    """Lines for the debug package: what was offered, then each file that was not and why (at most `limit`)."""
    offered = sum(d.rule == OFFERED for d in decisions)
    left_out = [d for d in decisions if d.rule != OFFERED]
    lines = [f"{offered} file{'' if offered == 1 else 's'} offered, {len(left_out)} not"
             + (", and why:" if left_out else ".")]
    lines += [f"{d.file}: {d.reason}" for d in left_out[:limit]]
    if len(left_out) > limit:
        lines.append(f"... and {len(left_out) - limit} more: see /v1/explain with these parameters")
    return lines


def nas_json(query: Query) -> Dict[str, Any]:
    """The parts of a request that decided, as /v1/explain shows them."""
    return {"platform": query.platform, "family": synology.family_of(query.platform), "build": query.build,
            "channel": "beta" if query.beta_channel else "stable", "unique": query.unique,
            "language": query.language}


# -- which NAS one file reaches (`spklite check`) ---------------------------------------------------------


def reach(package: Any) -> str:
    """Which NAS generations, platforms and channels a file (spk.Package) reaches, e.g. "DSM 7.0+ · x86_64
    family · stable": the catalog's own verdict for every known platform, DSM release and channel."""
    offer = Offer(SimpleNamespace(package=package))  # a record as the catalog sees it: only its INFO counts
    known = {synology.normalize_platform(p) for p in set(synology.PLATFORM_FAMILY) | synology.PLATFORMS_WITHOUT_FAMILY}
    # and the platforms its arch names that Synology does not (a NAS may still send them)
    grid = known | {p for p in offer.arch if p != "noarch" and p not in synology.FAMILIES}
    # The first build of every release, and the file's own limits (7.2-64570 is not 7.2's first build).
    builds = {build for _, build in synology.DSM_BUILDS} | {b for b in (offer.min_build, offer.max_build) if b}
    unique = offer.models[0] if offer.models else ""
    reached: Set[Tuple[str, int, bool]] = set()
    for platform in grid:
        for build in builds:
            for beta in (False, True):
                if isinstance(offer.verdict(Query(build, platform, "", beta, unique)), int):
                    reached.add((platform, build, beta))
    if not reached:
        return "no NAS"
    parts = [_dsm_text(offer, sorted({b for _, b, _ in reached})),
             _platforms_text(offer, grid, {p for p, _, _ in reached})]
    if offer.models:
        parts.append("only models " + ", ".join(offer.models))
    if offer.exclude_models:
        parts.append("not models " + ", ".join(offer.exclude_models))
    parts.append("stable" if any(not beta for _, _, beta in reached) else "beta channel only")
    return " · ".join(parts)


def _release(build: int) -> str:
    return "{}.{}".format(*synology.dsm_version_of_build(build))


def _dsm_text(offer: Offer, builds: List[int]) -> str:
    low, high = builds[0], builds[-1]
    firsts = {build for _, build in synology.DSM_BUILDS}
    low_text = _release(low) + ("" if low in firsts else f"-{low}")
    if offer.max_build is None and high >= synology.DSM_BUILDS[-1][1]:
        return f"DSM {low_text}+"
    high_text = _release(high)
    if low == synology.DSM_BUILDS[0][1]:
        return f"DSM {high_text} and older"
    return f"DSM {low_text}" if high_text == low_text else f"DSM {low_text}–{high_text}"


def _platforms_text(offer: Offer, grid: Set[str], reached: Set[str]) -> str:
    missing = sorted(grid - reached)
    if "noarch" in offer.arch:
        return "every platform" + (" except " + ", ".join(missing) if missing else "")
    parts = []
    for family in sorted(synology.FAMILIES):
        members = {p for p, f in synology.PLATFORM_FAMILY.items() if f == family} & grid
        got = members & reached
        if got == members:
            parts.append(f"{family} family")
        elif len(got) * 2 > len(members):
            parts.append(f"{family} family except " + ", ".join(sorted(members - got)))
        else:
            parts.extend(sorted(got))
    parts.extend(sorted(reached - set(synology.PLATFORM_FAMILY)))
    return ", ".join(parts)
