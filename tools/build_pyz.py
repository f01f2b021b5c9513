"""Build spklite.pyz: one file that runs with a bare `python3` (SPEC 5).

The archive holds the spklite package (with its assets), the pure-Python parts
of its dependencies taken from the distributions installed in the Python that
runs this script, and their licence files under licenses/. It is reproducible:
entries sorted, one fixed timestamp (SOURCE_DATE_EPOCH when set), fixed
permissions, fixed compression -- the same sources give the same bytes.

    python tools/build_pyz.py [-o dist/spklite.pyz]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("bottle", "waitress", "PyYAML", "inotify-simple")
# PyYAML's `_yaml` package only re-exports its C extension: useless without it.
SKIP_TOP_LEVEL = frozenset(("_yaml",))
SKIP_SUFFIXES = frozenset((".pyc", ".pyo", ".so", ".pyd", ".dylib", ".dll"))
LICENCE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)
SHEBANG = b"#!/usr/bin/env python3\n"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold

# The entry point: runs spklite from compiled bytecode kept in its cache (see the file).
MAIN = ROOT / "tools" / "pyz_main.py"
CONTENT_PLACEHOLDER = b'CONTENT = "@CONTENT@"'


class BuildError(Exception):
    """Something the person running the build has to fix; str() says what."""


def skipped(parts: Tuple[str, ...]) -> bool:
    return "__pycache__" in parts or PurePosixPath(parts[-1]).suffix in SKIP_SUFFIXES


def spklite_files(root: Path) -> Iterator[Tuple[str, bytes]]:
    """The spklite package from the source tree (an editable install lists no files)."""
    package = root / "spklite"
    if not (package / "__init__.py").is_file():
        raise BuildError(f"{package}: not the spklite source package")
    for path in sorted(package.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not skipped(parts) and not parts[-1].endswith("~"):
            yield "/".join(parts), path.read_bytes()
    licence = root / "LICENSE"
    if licence.is_file():
        yield "licenses/spklite/LICENSE", licence.read_bytes()


def distribution_files(name: str) -> Iterator[Tuple[str, bytes]]:
    """Pure-Python modules and licence files of one installed distribution."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise BuildError(
            f"dependency {name!r} is not installed for {sys.executable}; "
            "run the build with the project's venv (make pyz)"
        ) from None
    modules = licences = 0
    for file in sorted(dist.files or (), key=str):
        parts = PurePosixPath(str(file)).parts
        if not parts or parts[0] == ".." or skipped(parts):
            continue
        info_dir = parts[0].endswith(".dist-info")
        if info_dir and (LICENCE_NAME.match(parts[-1]) or "licenses" in parts[1:-1]):
            licences += 1
            yield f"licenses/{dist.metadata['Name']}/{parts[-1]}", file.locate().read_bytes()
        elif not info_dir and parts[0] not in SKIP_TOP_LEVEL and parts[-1].endswith(".py"):
            modules += 1
            yield "/".join(parts), file.locate().read_bytes()
    if not modules or not licences:
        raise BuildError(f"{name} {dist.version}: found {modules} modules and {licences} licence files")


def content_hash(entries: Dict[str, bytes]) -> str:
    """What names the folder the pyz extracts itself into: a rebuild with other content uses another."""
    digest = hashlib.sha256()
    for name in sorted(entries):
        digest.update(b"%d:%s%d:" % (len(name), name.encode(), len(entries[name])) + entries[name])
    return digest.hexdigest()[:16]


def entry_point(entries: Dict[str, bytes], template: Path = MAIN) -> bytes:
    source = template.read_bytes()
    if source.count(CONTENT_PLACEHOLDER) != 1:
        raise BuildError(f"{template}: expected one line {CONTENT_PLACEHOLDER.decode()}")
    return source.replace(CONTENT_PLACEHOLDER, b'CONTENT = "%s"' % content_hash(entries).encode())


def collect(root: Path = ROOT, dependencies: Tuple[str, ...] = DEPENDENCIES) -> Dict[str, bytes]:
    """Archive name -> content, everything the pyz holds."""
    entries: Dict[str, bytes] = {}
    sources = [spklite_files(root)] + [distribution_files(name) for name in dependencies]
    for source in sources:
        for name, data in source:
            if name in entries:
                raise BuildError(f"{name}: provided twice")
            entries[name] = data
    entries["__main__.py"] = entry_point(entries)
    return entries


def timestamp() -> Tuple[int, int, int, int, int, int]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return ZIP_EPOCH
    try:
        stamp = time.gmtime(int(epoch))
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={epoch!r}: expected seconds since 1970") from None
    return max(ZIP_EPOCH, tuple(stamp[:6]))  # type: ignore[return-value]


def zip_entry(name: str, mode: int, when: Tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when)
    info.create_system = 3  # Unix, whatever the build host: the mode bits below mean what they say
    info.external_attr = mode << 16
    if name.endswith("/"):
        info.external_attr |= 0x10  # MS-DOS directory flag
    return info


def directories(names: List[str]) -> List[str]:
    """Every parent folder as its own entry: some zip readers do not infer them."""
    found = set()
    for name in names:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            found.add("/".join(parts[:depth]) + "/")
    return sorted(found)


def write_pyz(entries: Dict[str, bytes], target: Path) -> int:
    """Write the archive atomically; return its size in bytes."""
    when = timestamp()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".spklite-", suffix=".pyz", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w") as archive:
                for name in sorted(directories(list(entries)) + list(entries)):
                    if name.endswith("/"):
                        archive.writestr(zip_entry(name, 0o40755, when), b"")
                    else:
                        archive.writestr(zip_entry(name, 0o100644, when), entries[name],
                                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target.stat().st_size


def build(target: Path, root: Path = ROOT) -> int:
    return write_pyz(collect(root), target)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "spklite.pyz",
                        help="where to write the archive (default: dist/spklite.pyz)")
    args = parser.parse_args(argv)
    try:
        size = build(args.output)
    except (BuildError, OSError) as exc:
        print(f"build_pyz: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {size} bytes ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
