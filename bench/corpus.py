"""Benchmark corpora: folders of real small SPKs, and large SPKs that cost no disk.

The small corpus mimics a community repository: each package id has a few
versions, each built for several platforms and for DSM 6 and DSM 7, some in
beta, some translated, with their own icons. The first N files of the list
are a repository of their own, so the 100/1,000/2,000 folders are prefixes
of one list (hard links, no extra disk).
"""

from __future__ import annotations

import os
import random
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import spkbuilder  # noqa: E402  (the test suite's builder of real .spk files)

# (file tag, INFO arch, DSM minimums this build exists for)
TARGETS = (
    ("x64", "x86_64", ("6.1-15047", "7.0-40000")),
    ("apollolake", "apollolake geminilake denverton", ("7.1-42661",)),
    ("armv8", "armv8 rtd1296 armada37xx", ("6.2.4-25556", "7.0-40000")),
    ("armv7", "armv7 alpine", ("6.1-15047", "7.0-40000")),
    ("armada38x", "armada38x", ("6.1-15047", "7.1-42661")),
    ("88f6281", "88f6281", ("6.1-15047",)),
    ("evansport", "evansport", ("6.2.4-25556", "7.0-40000")),
    ("noarch", "noarch", ("6.1-15047", "7.0-40000")),
)
LANGS = ("fre", "ger", "ita", "spn", "jpn", "chs", "nld", "ptb")

Spec = Tuple[str, Dict[str, object], Dict[str, object]]  # relative path, INFO, build_spk options


def small_specs(count: int, seed: int = 20240601) -> List[Spec]:
    """The first `count` files of a deterministic community-like repository."""
    rng = random.Random(seed)
    specs: List[Spec] = []
    n = 0
    while len(specs) < count:
        n += 1
        package = f"bench-{n:04d}"
        icon = spkbuilder.make_png(72, (n * 37 % 256, n * 91 % 256, n * 53 % 256))
        common: Dict[str, object] = {
            "package": package,
            "displayname": f"Bench package {n}",
            "description": f"Package number {n} of the spklite benchmark. " * rng.randint(1, 4),
            "maintainer": "spklite bench",
            "maintainer_url": "https://example.org/bench",
        }
        for lang in rng.sample(LANGS, rng.randint(0, 3)):
            common[f"displayname_{lang}"] = f"Paquet {n} ({lang})"
            common[f"description_{lang}"] = f"Description {lang} du paquet {n}."
        if rng.random() < 0.2:
            common["install_dep_packages"] = f"bench-{max(1, n - 1):04d}>1.0"
        targets = rng.sample(TARGETS, rng.randint(1, 4))
        versions = rng.choice((1, 1, 2, 3))
        options: Dict[str, object] = {
            "icon_256": rng.random() < 0.3,
            "screenshots": rng.choice((0, 0, 1, 2)),
            "license": rng.random() < 0.15,
            "install_wizard": rng.random() < 0.2,
            "extra_members": {"PACKAGE_ICON.PNG": icon},
        }
        for v in range(1, versions + 1):
            version = f"{n % 7}.{v}.{rng.randint(0, 9)}-{v + rng.randint(0, 20)}"
            beta = v == versions and versions > 1 and rng.random() < 0.4
            for tag, arch, minimums in targets:
                for minimum in minimums:
                    info = dict(common, version=version, arch=arch, os_min_ver=minimum)
                    if beta:
                        info["beta"] = "yes"
                        info["report_url"] = "https://example.org/bench/issues"
                    folder = "beta/" if beta else ("dsm6/" if minimum < "7" else "")
                    name = f"{folder}{package}_{tag}-{minimum.split('-')[0]}_{version}.spk"
                    specs.append((name, info, options))
    return specs[:count]


def build_corpus(folder: Path, specs: List[Spec]) -> None:
    for rel, info, options in specs:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        spkbuilder.build_spk(path, info, **options)  # type: ignore[arg-type]


def link_prefix(source: Path, specs: List[Spec], count: int, folder: Path) -> Path:
    """A folder holding the first `count` files of `source`, as hard links."""
    for rel, _, _ in specs[:count]:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source / rel, target)
    return folder


def build_large(path: Path, package: str, size: int) -> Path:
    """A valid SPK whose package.tgz is `size` zero bytes, written as a hole (sparse file)."""
    info = dict(spkbuilder.DEFAULT_INFO, package=package, version="1.0-1",
                displayname=f"Large {package}", arch="noarch", os_min_ver="7.0-40000")
    with open(path, "wb") as fh:
        head, end = spkbuilder.tar_bytes([("INFO", spkbuilder.info_text(info))])
        fh.write(head[:end])  # the INFO member, without the end-of-archive blocks
        member = tarfile.TarInfo("package.tgz")
        member.size, member.mtime, member.mode = size, spkbuilder.MTIME, 0o644
        fh.write(member.tobuf(tarfile.PAX_FORMAT))
        fh.seek(-(-size // 512) * 512, os.SEEK_CUR)  # the data: a hole reads as zeros
        rest = spkbuilder.tar_bytes([
            ("scripts/", None), ("scripts/start-stop-status", b"#!/bin/sh\nexit 0\n"),
            ("PACKAGE_ICON.PNG", spkbuilder.make_png(72)),
        ])[0]
        fh.write(rest)
    return path
