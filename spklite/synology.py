"""Synology facts: platforms and their families, DSM builds, version ordering.

Pure data and functions, no I/O. Derived from the reference tables in the
project's shared data (platform_family.tsv, dsm_firmware_builds.tsv,
dsm_languages.tsv).
"""

from __future__ import annotations

import re
from collections import namedtuple
from functools import lru_cache

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Optional, Tuple

# Platform (the `arch` a NAS sends) -> Synology family. Platforms whose family
# Synology leaves undefined match only themselves (and noarch).
PLATFORM_FAMILY = {
    **dict.fromkeys(
        "apollolake avoton braswell broadwell broadwellnk broadwellnkv2 broadwellntb"
        " broadwellntbap bromolow cedarview coffeelake denverton epyc7002 epyc7003"
        " epyc7003ntb geminilake geminilakenk grantley icelaked kvmcloud kvmx64"
        " nextkvmx64 purley r1000 r1000nk skylaked v1000 v1000nk dockerx64 x86"
        " x86_64".split(),
        "x86_64",
    ),
    "evansport": "i686",
    **dict.fromkeys("alpine alpine4k".split(), "armv7"),
    **dict.fromkeys("88f6281 88f6282 88f5281".split(), "armv5"),
    **dict.fromkeys("rtd1296 rtd1619 rtd1619b armada37xx".split(), "armv8"),
}

# Platforms known to exist but without a family of their own.
PLATFORMS_WITHOUT_FAMILY = frozenset(
    "armada370 armada375 armada38x armadaxp monaco comcerto2k hi3535 hi3536 qoriq"
    " ppc853x ppc854x ppc824x powerpc northstarplus ipq806x dakota hawkeye cypress".split()
)

FAMILIES = frozenset(PLATFORM_FAMILY.values())

# Some models report 88f6282; packages are built for 88f6281.
PLATFORM_ALIASES = {"88f6282": "88f6281"}

# (major, minor, micro) -> first DSM build number of that release.
DSM_BUILDS = (
    ((2, 0, 0), 731), ((2, 1, 0), 844), ((2, 2, 0), 942), ((2, 3, 0), 1139),
    ((3, 0, 0), 1337), ((3, 1, 0), 1594), ((3, 2, 0), 1922), ((4, 0, 0), 2198),
    ((4, 1, 0), 2636), ((4, 2, 0), 3202), ((4, 3, 0), 3776), ((5, 0, 0), 4458),
    ((5, 1, 0), 4977), ((5, 2, 0), 5644), ((6, 0, 0), 7393), ((6, 1, 0), 15047),
    ((6, 2, 0), 23739), ((6, 2, 2), 24922), ((6, 2, 4), 25556), ((7, 0, 0), 40000),
    ((7, 0, 1), 42214), ((7, 1, 0), 42661), ((7, 1, 1), 42962), ((7, 2, 0), 63134),
    ((7, 2, 2), 72806), ((7, 3, 0), 86009),
)

# (major, minor) -> the newest build known of that release, from data/dsm_firmware_builds.tsv: a release a
# person picks (the page) means its latest update, so every package labelled "DSM 7.2+" shows under 7.2.
NEWEST_BUILDS = (
    ((7, 3), 86009), ((7, 2), 72806), ((7, 1), 42962), ((7, 0), 42218), ((6, 2), 25556), ((6, 1), 15284),
    ((6, 0), 8451), ((5, 2), 5644), ((5, 1), 5022), ((5, 0), 4458), ((4, 3), 3776), ((4, 2), 3248),
    ((4, 1), 2636), ((4, 0), 2198), ((3, 2), 1922), ((3, 1), 1594), ((3, 0), 1593), ((2, 3), 1139),
    ((2, 2), 942), ((2, 1), 844), ((2, 0), 731),
)

LANGUAGES = (
    "enu cht chs krn ger fre ita spn jpn dan nor sve nld rus plk ptb ptg hun trk csy".split()
)

DSM7_BUILD = 40000  # first DSM 7 build: the generation split of SPEC 1.4
DICT_SHAPE_BUILD = 5004  # DSM 5.1 and later expect {"packages": [...]}


def normalize_platform(platform: str) -> str:
    platform = platform.strip().lower()
    return PLATFORM_ALIASES.get(platform, platform)


def family_of(platform: str) -> Optional[str]:
    """The family of a platform, or None when Synology defines none."""
    return PLATFORM_FAMILY.get(normalize_platform(platform))


def arch_match(platforms: Tuple[str, ...], platform: str) -> int:
    """How well an INFO arch list matches a platform, both normalized (normalize_platform): 3 exact,
    2 family, 1 noarch, 0 none."""
    if platform and platform in platforms:
        return 3
    family = PLATFORM_FAMILY.get(platform)
    if family and family in platforms:
        return 2
    return 1 if "noarch" in platforms else 0


def first_build(major: int, minor: Optional[int] = None) -> Optional[int]:
    """The first known build of DSM major[.minor], or None when unknown."""
    for (ma, mi, _), build in DSM_BUILDS:
        if ma == major and (minor is None or mi == minor):
            return build
    # An unknown later minor still belongs to its major: use the newest known one.
    known = [b for (ma, mi, _), b in DSM_BUILDS if ma == major and (minor is None or mi <= minor)]
    return known[-1] if known else None


def dsm_version_of_build(build: int) -> Tuple[int, int, int]:
    """The DSM (major, minor, micro) release a build belongs to (best effort)."""
    version = (0, 0, 0)
    for release, first in DSM_BUILDS:
        if build >= first:
            version = release
    return version


class Firmware(namedtuple("Firmware", "major minor build")):
    __slots__ = ()
    major: int
    minor: int
    build: int


# ASCII digits only, and few of them: `\d` also matches other scripts' digits, and int() refuses
# numbers over 4,300 digits (Python >= 3.11): hostile INFO values must not reach it.
_FIRMWARE = re.compile(r"^\s*([0-9]{1,9})(?:\.([0-9]{1,9}))?(?:\.[0-9]+)*-([0-9]{1,12})\s*$")


# The catalog of a new index state asks for every file's firmware and version: few distinct values repeat
# across versions and platforms, and parsing them anew was most of a 1,000-package catalog's build time.
@lru_cache(maxsize=4096)
def parse_firmware(text: Optional[str]) -> Optional[Firmware]:
    """Parse INFO os_min_ver / os_max_ver / firmware ("7.0-40000", "6.2.4-25556")."""
    if not text:
        return None
    match = _FIRMWARE.match(text)
    if not match:
        return None
    major, minor, build = match.groups()
    return Firmware(int(major), int(minor or 0), int(build))


_PART = re.compile(r"^([0-9]{0,18})(.*)$")


@lru_cache(maxsize=4096)  # see parse_firmware; the key is a tuple of tuples: immutable, safe to share
def version_key(version: str) -> tuple:
    """Sort key of a package version "<upstream>-<revision>" (SPEC 2.4).

    Upstream parts compare numerically, a part with letters by its digits
    then its letters (1.0.2b < 1.0.10); then the revision as an integer; no
    revision sorts before any revision (1.0 < 1.0-1).
    """
    upstream, sep, revision = version.strip().rpartition("-")
    if not sep or not (revision.isascii() and revision.isdigit() and len(revision) <= 18):
        upstream, revision = version.strip(), ""
    parts = []
    for part in upstream.split("."):
        digits, rest = _PART.match(part).groups()  # type: ignore[union-attr]
        parts.append((int(digits) if digits else -1, rest))
    return (tuple(parts), int(revision) if revision else -1)


DSM7_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,5}(-[0-9]+)?$")
