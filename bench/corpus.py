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
import shutil
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


# -- the large corpora (issue 12: N = 10,000 and 50,000) ----------------------------------------------------

TINY_GENERATOR = 1  # bump when tiny_spk's bytes change: the cached corpus is keyed by it
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spklite-bench"
TINY_MTIME = 1_700_000_000
# (file tag, INFO arch): each package id is built for two of these, for DSM 6 and DSM 7, in five versions.
TINY_TARGETS = (("x64", "x86_64"), ("apollolake", "apollolake geminilake"), ("armv8", "armv8 rtd1296"),
                ("armv7", "armv7 alpine"), ("armada38x", "armada38x"), ("evansport", "evansport"),
                ("88f6281", "88f6281"), ("noarch", "noarch"))
TINY_MINIMUMS = ("6.2.4-25556", "7.0-40000")
TINY_FILES = 20  # per package id: 5 versions x 2 targets x 2 DSM generations (a folder that keeps old versions)


def tar_member(name: str, data: bytes) -> bytes:
    """One ustar member (header, data, padding): a few microseconds, where tarfile takes ~50."""
    header = bytearray(512)
    header[0:len(name)] = name.encode()
    header[100:148] = b"0000644\0" b"0001750\0" b"0001750\0" + b"%011o\0" % len(data) + b"%011o\0" % TINY_MTIME
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + data + b"\0" * (-len(data) % 512)


def tiny_spk(n: int, file: int, package_tgz: bytes, icon: bytes) -> Tuple[str, bytes]:
    """File `file` (0-19) of tiny package `n`: its relative path and bytes (INFO, package.tgz, an icon)."""
    release, target, minimum = file // 4, file // 2 % 2, TINY_MINIMUMS[file % 2]
    tag, arch = TINY_TARGETS[(n + target * 3) % len(TINY_TARGETS)]
    version = f"{n % 5}.{release}.{n % 11}-{release * 10 + n % 7 + 1}"
    info = {"package": f"tiny-{n:05d}", "version": version, "arch": arch, "os_min_ver": minimum,
            "displayname": f"Tiny {n}", "description": f"Tiny package {n} of the spklite benchmark.",
            "maintainer": "spklite bench"}
    if n % 4 == 0:
        info.update({f"displayname_{lang}": f"Tiny {n} ({lang})" for lang in LANGS[n % 3:n % 3 + 2]})
    if n % 10 == 0 and release == 4:
        info.update(beta="yes", report_url="https://example.org/bench/issues")
    body = (tar_member("INFO", spkbuilder.info_text(info)) + tar_member("package.tgz", package_tgz)
            + tar_member("PACKAGE_ICON.PNG", icon) + b"\0" * 1024)
    return f"{n // 100:03d}/tiny-{n:05d}_{tag}-{minimum.split('-')[0]}_{version}.spk", body


def tiny_corpus(count: int) -> Path:
    """`count` distinct tiny SPKs (20 per package id, each id its own icon), made once and kept in the cache
    folder, keyed by the generator version: 4 KiB each, 50,000 in ~25 s. Only read: link it elsewhere."""
    folder = CACHE / f"tiny-v{TINY_GENERATOR}-{count}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    package_tgz = spkbuilder.make_package_tgz()
    icon = b""
    for i in range(count):
        n, file = divmod(i, TINY_FILES)
        if file == 0:
            icon = spkbuilder.make_png(72, (n * 37 % 256, n * 91 % 256, n * 53 % 256))
        rel, body = tiny_spk(n, file, package_tgz, icon)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (folder / ".complete").touch()
    return folder


def link_tree(source: Path, folder: Path, count: int) -> Path:
    """The first `count` .spk files of `source` (in name order) as hard links under `folder`."""
    done = 0
    for sub in sorted(p for p in source.iterdir() if p.is_dir()):
        names = sorted(sub.iterdir())[:count - done]
        (folder / sub.name).mkdir(parents=True)
        for path in names:
            os.link(path, folder / sub.name / path.name)
        done += len(names)
        if done >= count:
            break
    return folder
