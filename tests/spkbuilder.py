"""Build real .spk files for tests.

An SPK is an uncompressed tar holding INFO, package.tgz, scripts/ and
optional icons, screenshots, LICENSE and WIZARD_UIFILES/. Everything here is
written with the stdlib (tarfile, gzip, zlib) and is deterministic: the same
arguments give the same bytes.
"""

from __future__ import annotations

import base64
import gzip
import io
import lzma
import random
import struct
import tarfile
import zlib
from pathlib import Path

MTIME = 1_700_000_000  # fixed member time: identical arguments give identical files

DEFAULT_INFO: dict[str, str] = {
    "package": "demo",
    "version": "1.0-1",
    "arch": "noarch",
    "os_min_ver": "7.0-40000",
    "displayname": "Demo",
    "description": "A demo package",
    "maintainer": "spklite tests",
}

SCRIPTS = (
    "preinst",
    "postinst",
    "preuninst",
    "postuninst",
    "preupgrade",
    "postupgrade",
)

BROKEN_KINDS = (
    "gzip",
    "truncated",
    "random",
    "no_info",
    "empty",
    "no_eof",
    "encrypted",
    "xz",
)

# Synology's encrypted archives (DSM 7 system packages): a version byte, then AD BE EF.
ENCRYPTED_MAGIC = b"\xbf\xad\xbe\xef"


def make_png(size: int = 72, color: tuple[int, int, int] = (0x2A, 0x6F, 0xB5)) -> bytes:
    """A real, valid RGB PNG of size x size pixels in one colour."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" + bytes(color) * size  # filter type 0, then RGB triples
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size, 9))
        + chunk(b"IEND", b"")
    )


def info_text(info: dict[str, object]) -> bytes:
    """INFO file bytes: one key="value" line per key, `\\` and `"` escaped."""
    lines = []
    for key, value in info.items():
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{text}"\n')
    return "".join(lines).encode("utf-8")


def tar_bytes(members: list[tuple[str, bytes | None]], *, compress_gzip: bool = False) -> tuple[bytes, int]:
    """An uncompressed tar of `members`, and the offset where its end-of-archive blocks start."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/") if data is None else name)
            info.mtime = MTIME
            info.uid = info.gid = 1000
            info.uname = info.gname = "builder"
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if name.rstrip("/").split("/")[-2:-1] == ["scripts"] else 0o644
                tar.addfile(info, io.BytesIO(data))
        end = tar.offset  # where close() will write the two zero blocks
    data = buf.getvalue()
    if compress_gzip:
        data = gzip.compress(data, mtime=0)
    return data, end


def make_package_tgz() -> bytes:
    """A real small gzip tar, as package.tgz holds the package's files."""
    data, _ = tar_bytes([("bin/", None), ("bin/demo", b"#!/bin/sh\necho demo\n"), ("README", b"demo\n")])
    return gzip.compress(data, mtime=0)


def _spk_members(
    info: dict[str, object] | None,
    *,
    icon: bool,
    icon_256: bool,
    screenshots: int,
    license: bool,
    install_wizard: bool,
    upgrade_wizard: bool,
    empty_wizard_dir: bool,
    dot_slash: bool,
    base64_icon: bool,
    extra_members: dict[str, bytes] | None,
    package_tgz: bytes | None,
) -> list[tuple[str, bytes | None]]:
    merged: dict[str, object] = dict(DEFAULT_INFO)
    for key, value in (info or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    small, large = make_png(72, (0x2A, 0x6F, 0xB5)), make_png(256, (0xB5, 0x6F, 0x2A))
    if base64_icon:
        if icon:
            merged["package_icon"] = base64.b64encode(small).decode("ascii")
        if icon_256:
            merged["package_icon_256"] = base64.b64encode(large).decode("ascii")

    members: list[tuple[str, bytes | None]] = [
        ("INFO", info_text(merged)),
        ("package.tgz", make_package_tgz() if package_tgz is None else package_tgz),
        ("scripts/", None),
        (
            "scripts/start-stop-status",
            b'#!/bin/sh\ncase "$1" in status) exit 3;; esac\nexit 0\n',
        ),
    ]
    members += [(f"scripts/{name}", b"#!/bin/sh\nexit 0\n") for name in SCRIPTS]
    members += [
        ("conf/", None),
        ("conf/privilege", b'{"defaults": {"run-as": "package"}}\n'),
    ]
    if icon and not base64_icon:
        members.append(("PACKAGE_ICON.PNG", small))
    if icon_256 and not base64_icon:
        members.append(("PACKAGE_ICON_256.PNG", large))
    if license:
        members.append(("LICENSE", b"Demo licence: do what you like.\n"))
    if install_wizard or upgrade_wizard or empty_wizard_dir:
        members.append(("WIZARD_UIFILES/", None))
    if install_wizard:
        members.append(("WIZARD_UIFILES/install_uifile", b"[]\n"))
    if upgrade_wizard:
        members.append(("WIZARD_UIFILES/upgrade_uifile", b"[]\n"))
    for n in range(1, screenshots + 1):
        members.append((f"screen_{n}.png", make_png(64, (n * 40 % 256, 0x80, 0x40))))

    # Extra members replace a standard member of the same name, else are appended.
    for name, data in (extra_members or {}).items():
        entry: tuple[str, bytes | None] = (name, None if name.endswith("/") else data)
        positions = [i for i, (existing, _) in enumerate(members) if existing == name]
        if positions:
            members[positions[0]] = entry
        else:
            members.append(entry)
    if dot_slash:
        members = [("./" + name, data) for name, data in members]
    return members


def build_spk(
    path: str | Path,
    info: dict[str, object] | None = None,
    *,
    icon: bool = True,
    icon_256: bool = False,
    screenshots: int = 0,
    license: bool = False,
    install_wizard: bool = False,
    upgrade_wizard: bool = False,
    empty_wizard_dir: bool = False,
    dot_slash: bool = False,
    base64_icon: bool = False,
    extra_members: dict[str, bytes] | None = None,
    package_tgz: bytes | None = None,
) -> Path:
    """Write a real uncompressed-tar SPK to `path` and return the path.

    `info` overrides DEFAULT_INFO key by key; a key given as None is left out.
    `extra_members` maps member names to bytes (a name ending in "/" is a
    directory); a name that is already a standard member (e.g. "INFO")
    replaces it, which lets a test write raw INFO bytes.
    """
    members = _spk_members(
        info,
        icon=icon,
        icon_256=icon_256,
        screenshots=screenshots,
        license=license,
        install_wizard=install_wizard,
        upgrade_wizard=upgrade_wizard,
        empty_wizard_dir=empty_wizard_dir,
        dot_slash=dot_slash,
        base64_icon=base64_icon,
        extra_members=extra_members,
        package_tgz=package_tgz,
    )
    data, _ = tar_bytes(members)
    path = Path(path)
    path.write_bytes(data)
    return path


def _default_members() -> list[tuple[str, bytes | None]]:
    return _spk_members(
        None,
        icon=True,
        icon_256=False,
        screenshots=0,
        license=False,
        install_wizard=False,
        upgrade_wizard=False,
        empty_wizard_dir=False,
        dot_slash=False,
        base64_icon=False,
        extra_members=None,
        package_tgz=None,
    )


def build_broken(path: str | Path, kind: str) -> Path:
    """Write a file that is not a valid SPK, of the given kind (see BROKEN_KINDS)."""
    members = _default_members()
    good, end = tar_bytes(members)
    if kind == "gzip":
        data = gzip.compress(good, mtime=0)
    elif kind == "xz":
        data = lzma.compress(good, format=lzma.FORMAT_XZ)
    elif kind == "truncated":
        # Cut in the middle of package.tgz's data: an interrupted copy.
        with tarfile.open(fileobj=io.BytesIO(good), mode="r:") as tar:
            member = tar.getmember("package.tgz")
        data = good[: member.offset_data + member.size // 2]
    elif kind == "random":
        data = bytes(random.Random(20240601).getrandbits(8) for _ in range(4096))
    elif kind == "no_info":
        data, _ = tar_bytes([m for m in members if m[0] != "INFO"])
    elif kind == "empty":
        data = b""
    elif kind == "no_eof":
        data = good[:end]  # every member complete, the end-of-archive blocks missing
    elif kind == "encrypted":
        payload = bytes(random.Random(7).getrandbits(8) for _ in range(2048))
        data = ENCRYPTED_MAGIC + struct.pack("<I", 64) + payload
    else:
        raise ValueError(f"unknown broken kind {kind!r}; one of {', '.join(BROKEN_KINDS)}")
    path = Path(path)
    path.write_bytes(data)
    return path
