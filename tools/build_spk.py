"""Build the DSM 7 package of spklite itself: dist/spklite-<version>-noarch.spk.

The SPK is an uncompressed tar of INFO, package.tgz (the zipapp and the
firewall port file), scripts/, conf/ and two generated icons (64 and 256 px).
Every file under synology/ is taken as is, with @VERSION@, @PORT@ and
@CHECKSUM@ replaced. Like the pyz, the result is reproducible: fixed times,
owners and modes, sorted members.

    python tools/build_spk.py [--pyz dist/spklite.pyz] [-o dist]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import math
import re
import struct
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "synology"
PORT = 8880  # Package Center's "Open" link, the firewall rule and the listening port
REVISION = 1  # the SPK's own build number: raise it to ship a new package of the same spklite
MTIME = 315532800  # 1980-01-01, as in the pyz
DSM7_VERSION = re.compile(r"^\d+(\.\d+){0,5}(-\d+)?$")  # what DSM 7 accepts as INFO version
# Lifecycle scripts DSM runs; those absent from synology/scripts have nothing to do.
LIFECYCLE = ("preinst", "postinst", "preuninst", "postuninst", "preupgrade", "postupgrade")
NOTHING_TO_DO = b"#!/bin/sh\n# spklite needs no work at this step.\nexit 0\n"


class BuildError(Exception):
    """Something the person running the build has to fix; str() says what."""


def spklite_version(root: Path = ROOT) -> str:
    text = (root / "spklite" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not found:
        raise BuildError("spklite/__init__.py: no __version__")
    return found.group(1)


def package_version(version: str, revision: int = REVISION) -> str:
    spk_version = f"{version}-{revision}"
    if not DSM7_VERSION.match(spk_version):
        raise BuildError(f"version {spk_version!r} is not one DSM 7 accepts (digits and dots, then -revision)")
    return spk_version


# Icons ##########################################################################################

def png(rows: List[List[Tuple[int, int, int, int]]]) -> bytes:
    """An 8-bit RGBA PNG of the given rows of pixels."""
    raw = b"".join(b"\0" + bytes(channel for pixel in row for channel in pixel) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", len(rows[0]), len(rows), 8, 6, 0, 0, 0)  # RGBA, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


# A parcel seen from above: top, left and right faces of a cube, on a rounded blue square.
FACES = (
    ((255, 255, 255, 255), [(0.5, 0.2), (0.8, 0.36), (0.5, 0.52), (0.2, 0.36)]),
    ((225, 225, 225, 255), [(0.2, 0.4), (0.48, 0.56), (0.48, 0.86), (0.2, 0.7)]),
    ((200, 200, 200, 255), [(0.52, 0.56), (0.8, 0.4), (0.8, 0.7), (0.52, 0.86)]),
)
MARGIN, RADIUS = 0.06, 0.2
CLEAR = (0, 0, 0, 0)


def spans(points: List[Tuple[float, float]], y: float) -> List[Tuple[float, float]]:
    """The x ranges where the horizontal line at y is inside the polygon (even-odd rule)."""
    xs = sorted(x1 + (y - y1) * (x2 - x1) / (y2 - y1)
                for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]) if (y1 > y) != (y2 > y))
    return list(zip(xs[::2], xs[1::2]))


def square_span(y: float) -> Tuple[float, float]:
    """The x range of the rounded square at height y (empty when start > end)."""
    low, high = MARGIN + RADIUS, 1 - MARGIN - RADIUS
    dy = max(low - y, y - high, 0.0)
    if dy > RADIUS or y < MARGIN or y > 1 - MARGIN:
        return (1.0, 0.0)
    dx = RADIUS - math.sqrt(RADIUS * RADIUS - dy * dy)
    return (MARGIN + dx, 1 - MARGIN - dx)


def render(n: int) -> List[List[Tuple[int, int, int, int]]]:
    """The icon point-sampled on an n x n grid, one scanline at a time."""
    rows = []
    for j in range(n):
        y = (j + 0.5) / n
        background = (int(0x1E + 0x10 * y), int(0x88 - 0x30 * y), int(0xE5 - 0x40 * y), 255)
        left, right = square_span(y)
        faces = [(colour, spans(points, y)) for colour, points in FACES]
        row = []
        for i in range(n):
            x = (i + 0.5) / n
            colour = background if left <= x <= right else CLEAR
            if colour is background:
                for face_colour, ranges in faces:
                    if any(a <= x <= b for a, b in ranges):
                        colour = face_colour
                        break
            row.append(colour)
        rows.append(row)
    return rows


def shrink(rows: List[List[Tuple[int, int, int, int]]], factor: int) -> List[List[Tuple[int, int, int, int]]]:
    """Average factor x factor blocks (alpha-weighted): anti-aliased edges."""
    out = []
    for j in range(0, len(rows), factor):
        block_rows = rows[j:j + factor]
        row = []
        for i in range(0, len(rows[0]), factor):
            block = [pixel for r in block_rows for pixel in r[i:i + factor]]
            alpha = sum(p[3] for p in block)
            if not alpha:
                row.append(CLEAR)
                continue
            rgb = [round(sum(p[k] * p[3] for p in block) / alpha) for k in range(3)]
            row.append((rgb[0], rgb[1], rgb[2], round(alpha / len(block))))
        out.append(row)
    return out


def icons() -> Tuple[bytes, bytes]:
    """PACKAGE_ICON.PNG (64 px, DSM 7) and PACKAGE_ICON_256.PNG."""
    large = shrink(render(512), 2)
    return png(shrink(large, 4)), png(large)


# Archives #######################################################################################

def tar_bytes(members: Dict[str, bytes], modes: Dict[str, int], compress: bool) -> bytes:
    """A reproducible tar (gzip-compressed when asked) of the members, folders added, names sorted."""
    folders = {"/".join(name.split("/")[:i]) for name in members for i in range(1, name.count("/") + 1)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(folders | set(members)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            if name in folders:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(members[name]), modes.get(name, 0o644)
                tar.addfile(info, io.BytesIO(members[name]))
    if not compress:
        return raw.getvalue()
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def fill(template: bytes, values: Dict[str, str]) -> bytes:
    text = template.decode("utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z]+@", text)
    if leftover:
        raise BuildError(f"unknown placeholder {leftover.group(0)}")
    return text.encode("utf-8")


def build(pyz: Path, out_dir: Path, source: Path = SOURCE, root: Path = ROOT) -> Path:
    if not pyz.is_file():
        raise BuildError(f"{pyz}: no such zipapp; run `make pyz` first")
    version = package_version(spklite_version(root))
    values = {"VERSION": version, "PORT": str(PORT)}
    package_tgz = tar_bytes({"spklite.pyz": pyz.read_bytes(),
                             "spklite.sc": fill((source / "spklite.sc").read_bytes(), values)},
                            {}, compress=True)
    values["CHECKSUM"] = hashlib.md5(package_tgz).hexdigest()

    small_icon, large_icon = icons()
    members = {"INFO": fill((source / "INFO.in").read_bytes(), values),
               "package.tgz": package_tgz,
               "PACKAGE_ICON.PNG": small_icon,
               "PACKAGE_ICON_256.PNG": large_icon}
    modes: Dict[str, int] = {}
    for name in LIFECYCLE:
        members[f"scripts/{name}"] = NOTHING_TO_DO
    for path in sorted((source / "scripts").iterdir()):
        members[f"scripts/{path.name}"] = fill(path.read_bytes(), values)
    for name in members:
        if name.startswith("scripts/"):
            modes[name] = 0o755
    for path in sorted((source / "conf").iterdir()):
        members[f"conf/{path.name}"] = fill(path.read_bytes(), values)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"spklite-{version}-noarch.spk"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(tar_bytes(members, modes, compress=False))
    tmp.replace(target)
    return target


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "spklite.pyz", help="the zipapp to ship")
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "dist", help="where the .spk goes")
    args = parser.parse_args(argv)
    try:
        target = build(args.pyz, args.output_dir)
    except (BuildError, OSError) as exc:
        print(f"build_spk: {exc}", file=sys.stderr)
        return 1
    print(f"{target}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
