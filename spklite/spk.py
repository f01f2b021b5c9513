"""Read one .spk file: INFO, icons, screenshots, wizard/LICENSE flags, findings.

An SPK is an uncompressed tar (SPEC 2.1). Only member headers are walked --
tarfile seeks over member data on a seekable file -- and only the small
members that matter are read, so indexing a 2 GB package reads kilobytes.
Every problem with the bytes of a file becomes an SpkError whose text is the
rejection reason shown to the operator; nothing else escapes.

Pure: no globals changed, no threads; the only I/O is reading the given file
(and whatever the caller's `store` callback does with icon bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from spklite.synology import DSM7_BUILD, DSM7_VERSION, parse_firmware

BLOCK = 512
MAX_INFO = 1 << 20  # a real INFO is a few KiB; a huge one is hostile or broken
MAX_IMAGE = 8 << 20  # per icon or screenshot
MAX_IMAGES = 48 << 20  # all images of one package together (they are held until stored)
MAX_LINE_WARNINGS = 20  # findings about INFO lines kept per file
MAX_READ = 16 << 20  # no single read is larger: a hostile 2 GB pax header is refused, not read
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REQUIRED = ("package", "version", "arch")
RECOMMENDED = ("description", "maintainer", "displayname")
BASE64_ICON_KEYS = ("package_icon", "package_icon_120", "package_icon_256")

# Leading bytes of formats that are not an uncompressed tar, and the reason given.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
COMPRESSED_REASON = "compressed tar ({}) — SPKs must be uncompressed"
# Synology's own encrypted archives (DSM 7 system .spk/.pat): a format byte, then AD BE EF.
_SYNOLOGY_ENCRYPTED = b"\xad\xbe\xef"

_BAD_PACKAGE_NAME = re.compile(r"[:/<>|=\s]")
_SCREENSHOT = re.compile(r"^((?:.*_)?screen_)(\d+)\.png$", re.IGNORECASE)
_WIZARD = re.compile(r"^WIZARD_UIFILES/(install|upgrade)_uifile(?:_[A-Za-z]{3})?(?:\.sh)?$")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")
_ESCAPE = re.compile(r"\\([\"\\])")


class SpkError(Exception):
    """A file that is not a usable package; str(error) is the precise reason.

    `warnings` holds the non-fatal findings gathered before the rejection.
    """

    def __init__(self, reason: str, warnings: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.warnings = warnings


def blob_name(data: bytes, suffix: str) -> str:
    """A content-hash name for an icon or screenshot (stable, cacheable forever)."""
    return hashlib.sha256(data).hexdigest()[:32] + suffix


# Package record ##################################################################


@dataclass(frozen=True)
class Package:
    """What the index, the catalog and the API need to know about one .spk."""

    info: dict[str, str]  # INFO keys lower-cased; base64 icon values dropped
    icon: str | None  # blob name of the small icon
    icon_256: str | None  # blob name of the 256 px icon
    screenshots: tuple[str, ...]  # blob names, in file-name order
    has_license: bool
    install_wizard: bool
    upgrade_wizard: bool
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "info": dict(self.info),
            "icon": self.icon,
            "icon_256": self.icon_256,
            "screenshots": list(self.screenshots),
            "has_license": self.has_license,
            "install_wizard": self.install_wizard,
            "upgrade_wizard": self.upgrade_wizard,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Package:
        """The inverse of to_json; ValueError when `data` is not such a dict."""
        try:
            info = data["info"]
            fields = {
                "icon": data["icon"],
                "icon_256": data["icon_256"],
                "screenshots": tuple(data["screenshots"]),
                "has_license": data["has_license"],
                "install_wizard": data["install_wizard"],
                "upgrade_wizard": data["upgrade_wizard"],
                "warnings": tuple(data["warnings"]),
            }
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a package record: {exc!r}") from None
        ok = (
            isinstance(info, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in info.items())
            and all(isinstance(fields[k], (str, type(None))) for k in ("icon", "icon_256"))
            and all(isinstance(s, str) for s in fields["screenshots"] + fields["warnings"])
            and all(isinstance(fields[k], bool) for k in ("has_license", "install_wizard", "upgrade_wizard"))
        )
        if not ok:
            raise ValueError("not a package record: a field has the wrong type")
        return cls(info=dict(info), **fields)


# INFO syntax (SPEC 2.2) ##########################################################


def parse_info(raw: bytes) -> tuple[dict[str, str], list[str]]:
    """Parse INFO bytes into (lower-cased key -> value, warnings). Never raises."""
    warnings: list[str] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        warnings.append("INFO is not UTF-8; read as Latin-1")
    info: dict[str, str] = {}
    dropped = 0
    # Split on \n only: str.splitlines() would also split on U+2028 etc. inside values.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # Findings about lines are kept up to a limit: 1 MiB of junk lines must not
        # become 500,000 warnings (55 MB in memory, 23 MB in the snapshot).
        found = warnings if len(warnings) < MAX_LINE_WARNINGS else []
        match = _ASSIGNMENT.match(line)
        if not match:
            found.append(f"INFO line {number}: not a key=value line: {_clip(line)!r}")
        else:
            info[match.group(1).lower()] = _value(match.group(2), number, found)
        if found is not warnings:
            dropped += len(found)
    if dropped:
        warnings.append(f"INFO: {dropped} more findings about its lines not shown")
    return info, warnings


def _value(text: str, number: int, warnings: list[str]) -> str:
    """The value part of one INFO line, unquoted."""
    text = text.rstrip()
    quote = text[:1]
    if quote not in ('"', "'"):
        return text.strip()
    body = text[1:]
    # The value ends at the line's last quote: real INFO files (2013 SynoCommunity
    # packages) hold unescaped inner quotes such as  description="a "b" c".
    end = body.rfind(quote)
    if end < 0:
        warnings.append(f"INFO line {number}: unterminated {quote} quote")
        end = len(body)
    elif body[end + 1 :].strip():
        warnings.append(f"INFO line {number}: text after the closing quote ignored")
    value = body[:end]
    return _ESCAPE.sub(r"\1", value) if quote == '"' else value


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# Reading the tar #################################################################


class _Found:
    """What one walk over the tar collected (raw bytes, flags, member headers)."""

    def __init__(self) -> None:
        self.info: bytes | None = None
        self.icon: bytes | None = None
        self.icon_256: bytes | None = None
        self.screenshots: list[tuple[tuple[str, int, str], bytes]] = []  # (sort key, data)
        self.image_bytes = 0
        self.has_license = False
        self.install_wizard = False
        self.upgrade_wizard = False
        self.package_tgz: tarfile.TarInfo | None = None
        self.warnings: list[str] = []


def read_spk(
    path: str | os.PathLike[str],
    store: Callable[[bytes, str], str] = blob_name,
    verify_checksum: bool = False,
) -> Package:
    """Read and validate one .spk; raise SpkError with the reason when it is not usable.

    Icons and screenshots are handed to `store(data, ".png")`, which returns the
    name the record keeps (default: the content-hash name, nothing written).
    `verify_checksum` reads package.tgz whole to compare it with INFO `checksum`;
    the indexer leaves it off, `check()` turns it on.
    """
    fh = _open(path)
    with fh:
        try:
            found = _walk(fh, os.fstat(fh.fileno()).st_size)
            if found.info is None:
                raise SpkError("INFO missing")
            info, warnings = parse_info(found.info)
            warnings = found.warnings + warnings
            if found.package_tgz is None:
                warnings.append("package.tgz missing")
            icons = _base64_icons(info, found, warnings)
            _validate(info, warnings, has_icon=bool(icons[0] or icons[1]))
            if verify_checksum:
                _verify_checksum(fh, info, found.package_tgz, warnings)
        except SpkError:
            raise
        except Exception as exc:  # tarfile fails in many ways on hostile bytes
            raise SpkError(f"unreadable archive: {exc}") from None
    # Stored after the file is closed, outside the net above: a failing store is
    # the caller's problem, not a defect of this package.
    icon, icon_256 = (None if data is None else store(data, ".png") for data in icons)
    shots = tuple(store(data, ".png") for _, data in sorted(found.screenshots))
    return Package(
        info=info,
        icon=icon,
        icon_256=icon_256,
        screenshots=shots,
        has_license=found.has_license,
        install_wizard=found.install_wizard,
        upgrade_wizard=found.upgrade_wizard,
        warnings=tuple(warnings),
    )


def check(path: str | os.PathLike[str]) -> tuple[str | None, list[str]]:
    """(rejection reason or None, warnings) for `spklite check`. Never raises."""
    try:
        package = read_spk(path, verify_checksum=True)
    except SpkError as exc:
        return str(exc), list(exc.warnings)
    return None, list(package.warnings)


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    # O_NONBLOCK: opening a FIFO must not hang; it is then refused as not a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SpkError(f"cannot read: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:  # e.g. a NUL byte in the path
        raise SpkError(f"cannot read: {exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpkError("not a regular file")
    return os.fdopen(fd, "rb")


def _sniff(head: bytes, size: int) -> None:
    """Refuse what is plainly not an uncompressed tar, before tarfile sees it."""
    if size == 0:
        raise SpkError("empty file")
    for magic, kind in _COMPRESSED:
        if head.startswith(magic):
            raise SpkError(COMPRESSED_REASON.format(kind))
    if head[1:4] == _SYNOLOGY_ENCRYPTED:
        raise SpkError("encrypted Synology archive, cannot be read")
    if len(head) < BLOCK:
        if head[257:262] == b"ustar":
            raise SpkError(f"truncated: file ends inside the first header ({size} bytes)")
        raise SpkError("not a tar archive")
    if head.count(0) == BLOCK:
        return  # an empty archive: "INFO missing" follows
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        raise SpkError("not a tar archive") from None


class _Bounded:
    """The file as tarfile sees it: reads larger than MAX_READ are refused.

    tarfile reads an extended (pax or GNU long-name) header whole, whatever size
    the header claims; legitimate reads here are never near the bound.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise SpkError(f"corrupt tar: a header or member claims {size} bytes at offset {self.fh.tell()}")
        return self.fh.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()


def _walk(fh: IO[bytes], size: int) -> _Found:
    head = fh.read(BLOCK)
    _sniff(head, size)
    fh.seek(0)
    found = _Found()
    # next() reads one header per member and seeks over the data.
    tar = tarfile.TarFile(fileobj=_Bounded(fh), mode="r")  # type: ignore[arg-type]  # read-only use
    member: tarfile.TarInfo | None = None
    try:
        while True:
            member = tar.next()
            if member is None:
                break
            # tarfile keeps every header it has read: forget them, or memory grows with
            # the member count (~600 bytes each: 1 GB of empty members would take 600 MB).
            tar.members.clear()  # type: ignore[attr-defined]  # missing from the stubs
            if member.isreg() and member.offset_data + member.size > size:
                raise SpkError(f"truncated: file ends inside member {member.name!r}")
            _take(tar, member, found)
    except tarfile.ReadError as exc:
        where = f"after member {member.name!r}" if member is not None else "at the start"
        raise SpkError(f"truncated or corrupt tar {where}: {exc}") from None
    _check_end(fh, tar.offset, size)
    return found


def _check_end(fh: IO[bytes], end: int, size: int) -> None:
    """tarfile stops quietly at a short or bad header: tell those from a proper end."""
    fh.seek(end)
    block = fh.read(BLOCK)
    if not block:
        raise SpkError("truncated: the end-of-archive blocks are missing (interrupted copy?)")
    if len(block) < BLOCK:
        raise SpkError(f"truncated: file ends inside a header at offset {end}")
    # One zero block is accepted: POSIX asks for two, but a finished writer is all that matters.
    if block.count(0) != BLOCK:
        raise SpkError(f"corrupt tar: invalid member header at offset {end}")


def _take(tar: tarfile.TarFile, member: tarfile.TarInfo, found: _Found) -> None:
    """Look at one member: read it if it is one we need, else note its name only."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    if not member.isreg():
        return
    upper = name.upper()
    if name == "INFO":
        if member.size > MAX_INFO:
            raise SpkError(f"INFO too large ({member.size} bytes, limit {MAX_INFO})")
        found.info = _read(tar, member)
    elif name == "package.tgz":
        found.package_tgz = member
    elif name == "LICENSE":
        found.has_license = True
    elif upper in ("PACKAGE_ICON.PNG", "PACKAGE_ICON_256.PNG"):
        data = _image(tar, member, name, found)
        if data is not None and upper == "PACKAGE_ICON.PNG":
            found.icon = data
        elif data is not None:
            found.icon_256 = data
    elif "/" not in name and _SCREENSHOT.match(name):
        _screenshot(tar, member, name, found)
    else:
        wizard = _WIZARD.match(name)
        if wizard and wizard.group(1) == "install":
            found.install_wizard = True
        elif wizard:
            found.upgrade_wizard = True


def _screenshot(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, found: _Found) -> None:
    # Ordered by number, not by string: screen_2 comes before screen_10.
    match = _SCREENSHOT.match(name)
    data = _image(tar, member, name, found)
    if match and data is not None:
        key = (match.group(1).upper(), int(match.group(2)), name)
        found.screenshots.append((key, data))


def _image(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, found: _Found) -> bytes | None:
    """An icon or screenshot's bytes, or None (with a warning) when it cannot be used."""
    if member.size > MAX_IMAGE or found.image_bytes + member.size > MAX_IMAGES:
        found.warnings.append(f"{name}: too large ({member.size} bytes), ignored")
        return None
    data = _read(tar, member)
    if not data.startswith(PNG_SIGNATURE):
        found.warnings.append(f"{name}: not a PNG image, ignored")
        return None
    found.image_bytes += len(data)
    return data


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    member_file = tar.extractfile(member)
    assert member_file is not None  # regular members always have a file
    return member_file.read(member.size)


def _verify_checksum(
    fh: IO[bytes],
    info: dict[str, str],
    tgz: tarfile.TarInfo | None,
    warnings: list[str],
) -> None:
    expected = info.get("checksum", "").strip().lower()
    if not expected or tgz is None:
        return
    digest = hashlib.md5()
    fh.seek(tgz.offset_data)
    left = tgz.size
    while left:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    if digest.hexdigest() != expected:
        warnings.append(f"INFO: checksum {expected} does not match package.tgz (md5 {digest.hexdigest()})")


# Icons inside INFO ###############################################################


def _base64_icons(info: dict[str, str], found: _Found, warnings: list[str]) -> tuple[bytes | None, bytes | None]:
    """(small icon, 256 px icon): members win, then INFO base64; base64 keys leave `info`."""
    encoded = {key: info.pop(key) for key in BASE64_ICON_KEYS if key in info}
    small, large = found.icon, found.icon_256
    for key in ("package_icon", "package_icon_120"):
        if small is None and key in encoded:
            small = _decode_icon(key, encoded[key], warnings)
    if large is None and "package_icon_256" in encoded:
        large = _decode_icon("package_icon_256", encoded["package_icon_256"], warnings)
    return small, large


def _decode_icon(key: str, text: str, warnings: list[str]) -> bytes | None:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        warnings.append(f"INFO: {key} is not valid base64, ignored")
        return None
    if not data.startswith(PNG_SIGNATURE):
        warnings.append(f"INFO: {key} is not a PNG image, ignored")
        return None
    return data


# Validation (SPEC 2.3) ###########################################################


def _validate(info: dict[str, str], warnings: list[str], has_icon: bool) -> None:
    """Add findings to `warnings`; raise SpkError (with them) for a fatal one."""
    reason: str | None = None
    for key in REQUIRED:
        if not info.get(key, "").strip():
            reason = reason or f"INFO: missing required key {key!r}"
    name = info.get("package", "")
    if name and _BAD_PACKAGE_NAME.search(name):
        reason = reason or f"INFO: invalid package name {name!r}"

    minimum = parse_firmware(info.get("os_min_ver") or info.get("firmware"))
    if "os_min_ver" not in info:
        warnings.append("INFO: os_min_ver missing (DSM 7 requires it)")
    for key in ("os_min_ver", "os_max_ver", "firmware"):
        if key in info and parse_firmware(info[key]) is None:
            warnings.append(f"INFO: {key} {info[key]!r} is not X.Y[.Z]-BUILD")
    dsm7 = minimum is not None and minimum.major >= 7
    if dsm7 and minimum is not None and minimum.build < DSM7_BUILD:
        warnings.append(f"INFO: minimum DSM 7 with build {minimum.build} (DSM 7 builds start at {DSM7_BUILD})")

    version = info.get("version", "")
    if version and not DSM7_VERSION.match(version):
        if dsm7:
            reason = reason or f"INFO: invalid version {version!r} (DSM 7 refuses it)"
        else:
            warnings.append(f"INFO: version {version!r} would be refused by DSM 7")
    for key in RECOMMENDED:
        if not info.get(key, "").strip():
            warnings.append(f"INFO: missing recommended key {key!r}")
    if not has_icon:
        warnings.append("no icon (PACKAGE_ICON.PNG or INFO package_icon)")
    if reason:
        raise SpkError(reason, tuple(warnings))
