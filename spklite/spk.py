"""Read one .spk file: INFO, icons, screenshots, wizard/LICENSE flags, findings.

An SPK is an uncompressed tar (SPEC 2.1). Only member headers are walked,
seeking over member data, and only the small members that matter are read,
so indexing a 2 GB package reads kilobytes.
Every problem with the bytes of a file becomes an SpkError whose text is the
rejection reason shown to the operator; nothing else escapes.

Pure: no globals changed, no threads; the only I/O is reading the given file
(and whatever the caller's `store` callback does with icon bytes).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from sys import intern
from zlib import adler32

from spklite.synology import DSM7_BUILD, DSM7_VERSION, parse_firmware

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any

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


TRUE_WORDS = frozenset(("yes", "true", "1", "on"))
FALSE_WORDS = frozenset(("no", "false", "0", "off"))


def truth(value: str | None) -> bool | None:
    """True/False for a true-ish/false-ish INFO value, None otherwise."""
    if value is None:
        return None
    word = value.strip().strip('"').lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


UNREADABLE = "cannot read"  # starts the reason of a file the server may not or cannot read (not its content)


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


class Package(
    namedtuple("Package", "info icon icon_256 screenshots has_license install_wizard upgrade_wizard warnings")
):
    """What the index, the catalog and the API need to know about one .spk."""

    __slots__ = ()
    info: dict[str, str]  # INFO keys lower-cased; base64 icon values dropped
    icon: str | None  # blob name of the small icon
    icon_256: str | None  # blob name of the 256 px icon
    screenshots: tuple[str, ...]  # blob names, in file-name order
    has_license: bool
    install_wizard: bool
    upgrade_wizard: bool
    warnings: tuple[str, ...]

    def to_json(self, texts: dict[str, int]) -> dict[str, Any]:
        """A JSON-ready dict; INFO values are numbers in `texts` (text -> number), which grows as needed."""
        return {
            "info": {key: texts.setdefault(value, len(texts)) for key, value in self.info.items()},
            "icon": self.icon,
            "icon_256": self.icon_256,
            "screenshots": list(self.screenshots),
            "has_license": self.has_license,
            "install_wizard": self.install_wizard,
            "upgrade_wizard": self.upgrade_wizard,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], texts: Sequence[str]) -> Package:
        """The inverse of to_json, with `texts` the table as a list; ValueError when `data` is not such a dict."""
        try:
            # Interned: each line's JSON makes its own copies of the keys and blob names, ~0.5 KiB a file.
            # intern() also refuses (TypeError) whatever is not text: keys, icons and screenshots need no check.
            info = {intern(key): texts[number] for key, number in data["info"].items()}
            icon, icon_256 = (data[k] if data[k] is None else intern(data[k]) for k in ("icon", "icon_256"))
            screenshots, warnings = tuple(map(intern, data["screenshots"])), tuple(data["warnings"])
            flags = (data["has_license"], data["install_wizard"], data["upgrade_wizard"])
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a package record: {exc!r}") from None
        # This runs for every record at each start-up: type() tests in plain loops
        # are the cheapest check (isinstance, all() and sets all cost more).
        if not (type(flags[0]) is type(flags[1]) is type(flags[2]) is bool and all_str(warnings)):
            raise ValueError("not a package record: a field has the wrong type")
        return cls(info, icon, icon_256, screenshots, *flags, warnings)


def all_str(items: Iterable[Any]) -> bool:
    for item in items:
        if type(item) is not str:
            return False
    return True


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
            info[intern(match.group(1).lower())] = _value(match.group(2), number, found)  # one copy of each key
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
    return _ESCAPE.sub(r"\1", value) if quote == '"' and "\\" in value else value


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# Reading the tar #################################################################
#
# A small walker of our own rather than tarfile: an SPK is indexed by reading one
# 512-byte header per member and seeking over the data, and tarfile spends most of
# its time on TarInfo objects, field conversions and bookkeeping that are not needed.
# Header layout (POSIX ustar): name 0:100, size 124:136, checksum 148:156,
# typeflag 156, magic 257:263, prefix 345:500.

_ZERO_BLOCK = bytes(BLOCK)
# Type flags (the header's byte 156).
_FILE_TYPES = frozenset(b"07\0")  # regular (new and old style) and contiguous files
_NO_DATA_TYPES = frozenset(b"123456")  # links, devices, directories, FIFOs: any size is ignored
_EXTENDED_TYPES = frozenset(b"xgLK")  # pax (per member, global), GNU long name, long link name
_PAX, _LONG_NAME, _SPARSE = ord("x"), ord("L"), ord("S")
_HIGH_BYTES = bytes(range(128, 256))


class _Found:
    """What one walk over the tar collected (raw bytes, flags, where package.tgz is)."""

    def __init__(self) -> None:
        self.info: bytes | None = None
        self.icon: bytes | None = None
        self.icon_256: bytes | None = None
        self.screenshots: list[tuple[tuple[str, int, str], bytes]] = []  # (sort key, data)
        self.image_bytes = 0
        self.has_license = False
        self.install_wizard = False
        self.upgrade_wizard = False
        self.package_tgz: tuple[int, int] | None = None  # (data offset, size)
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
            _validate(info, warnings, has_icon=bool(icons[0] or icons[1]), install_wizard=found.install_wizard)
            if verify_checksum:
                _verify_checksum(fh, info, found.package_tgz, warnings)
        except OSError as exc:  # an I/O error inside the file (bad disk, NAS gone)
            raise SpkError(f"{UNREADABLE} archive: {exc}") from None
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


def check(path: str | os.PathLike[str]) -> tuple[str | None, list[str], Package | None]:
    """(rejection reason or None, warnings, the package when it is one) for `spklite check` and uploads: the
    checksum verified too. Never raises."""
    try:
        package = read_spk(path, verify_checksum=True)
    except SpkError as exc:
        return str(exc), list(exc.warnings), None
    return None, list(package.warnings), package


class NotRegularFile(OSError):
    """A FIFO, device or folder where a package file is expected."""


def open_regular(path: str | os.PathLike[str], buffering: int = -1) -> IO[bytes]:
    """The file at `path` opened for reading; NotRegularFile when it is not a regular file.

    O_NONBLOCK: opening a FIFO swapped in under a package's name must not wait (for good, without a
    writer); it is then refused. Cleared once the file is known to be regular.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering)
    except BaseException:
        os.close(fd)
        raise


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    try:
        # One 64 KiB read holds a small SPK whole: the header walk then seeks inside the buffer.
        return open_regular(path, buffering=1 << 16)
    except NotRegularFile:
        raise SpkError("not a regular file") from None
    except OSError as exc:
        raise SpkError(f"{UNREADABLE}: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:  # e.g. a NUL byte in the path
        raise SpkError(f"{UNREADABLE}: {exc}") from None


def _sniff(head: bytes, size: int) -> None:
    """Refuse what is plainly not an uncompressed tar, with the reason for what it is."""
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
    if head != _ZERO_BLOCK and not _checksum_ok(head):  # all zero: an empty archive, "INFO missing"
        raise SpkError("not a tar archive")


def _walk(fh: IO[bytes], size: int) -> _Found:
    """Read every member header, seeking over the data of the members not needed."""
    found = _Found()
    pos = 0  # offset of the header block in hand
    block = fh.read(BLOCK)
    _sniff(block, size)
    # Extended headers describe the member whose header follows them: a pax 'x' or a
    # GNU 'L' header may give its name, a pax 'x' header its size.
    long_name: str | None = None
    long_size: int | None = None
    extended_at = -1  # offset of an extended header still waiting for its member
    while True:
        if len(block) < BLOCK:
            if not block:
                raise SpkError("truncated: the end-of-archive blocks are missing (interrupted copy?)")
            raise SpkError(f"truncated: file ends inside a header at offset {pos}")
        if block == _ZERO_BLOCK:
            if extended_at >= 0:
                raise SpkError(f"corrupt tar: the extended header at offset {extended_at} has no member")
            # One zero block is accepted: POSIX asks for two, but a finished writer is all that matters.
            return found
        if not _checksum_ok(block):
            raise SpkError(f"corrupt tar: invalid member header at offset {pos}")
        kind = block[156]
        length = _size(block[124:136])
        if length is None:
            raise SpkError(f"corrupt tar: invalid size field in the header at offset {pos}")
        start = pos + BLOCK
        if kind == _SPARSE and block[482]:
            start = _skip_sparse_map(fh, start)
        if kind in _EXTENDED_TYPES:
            # Global pax headers and long link names are not needed: skipped unread.
            if kind in (_PAX, _LONG_NAME) and length > MAX_READ:
                raise SpkError(f"corrupt tar: a header or member claims {length} bytes at offset {start}")
            end = start + _padded(length)
            if end > size:
                raise SpkError(f"truncated: file ends inside an extended header at offset {pos}")
            extended_at = pos
            if kind == _PAX:
                long_name, long_size = _pax(fh.read(length), pos, long_name, long_size)
            elif kind == _LONG_NAME:
                long_name = _text(fh.read(length).partition(b"\0")[0])
        else:
            name = _header_name(block) if long_name is None else long_name
            if long_size is not None:
                length = long_size
            long_name, long_size, extended_at = None, None, -1
            if kind in _NO_DATA_TYPES:
                length = 0
            end = start + _padded(length)
            if end > size:
                raise SpkError(f"truncated: file ends inside member {name!r}")
            if kind in _FILE_TYPES:
                _take(fh, name, start, length, found)
        pos = end
        fh.seek(pos)
        block = fh.read(BLOCK)


def _checksum_ok(block: bytes) -> bool:
    """Does the header's checksum field match the sum of its bytes (the field counted as spaces)?"""
    stored = _octal(block[148:156])
    if stored is None:
        return False
    # zlib.adler32's low half is 1 + the byte sum modulo 65521: exact for 256 bytes
    # (at most 65280), and five times faster than sum() over the block.
    total = (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2
    unsigned = total - sum(block[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    # Some old tars summed the bytes as signed chars.
    high = BLOCK - 8 - len((block[:148] + block[156:]).translate(None, _HIGH_BYTES))
    return stored == unsigned - 256 * high


def _size(field: bytes) -> int | None:
    """A size field: octal, or GNU base-256 for sizes of 8 GiB and more; None if invalid."""
    if field[0] == 0x80:  # base-256, positive (a leading 0xFF would be negative)
        return int.from_bytes(field[1:], "big")
    return _octal(field)


def _octal(field: bytes) -> int | None:
    """An octal number field, NUL or space padded (empty is 0); None if invalid."""
    digits = field.partition(b"\0")[0].strip(b" ")
    if not digits:
        return 0
    if not digits.isdigit():  # int() would also take signs, underscores and inner spaces
        return None
    try:
        return int(digits, 8)
    except ValueError:  # an 8 or a 9
        return None


def _padded(length: int) -> int:
    return -(-length // BLOCK) * BLOCK


def _skip_sparse_map(fh: IO[bytes], start: int) -> int:
    """Old GNU sparse members continue their map in extra blocks before the data; skip them."""
    while True:
        block = fh.read(BLOCK)
        if len(block) < BLOCK:
            raise SpkError(f"truncated: file ends inside a header at offset {start}")
        start += BLOCK
        if not block[504]:  # "another map block follows"
            return start


def _pax(data: bytes, at: int, name: str | None, size: int | None) -> tuple[str | None, int | None]:
    """`path` and `size` from pax records "<length> <key>=<value>\\n" (else the values given)."""
    pos = 0
    end = len(data.rstrip(b"\0"))  # some writers pad the records with NULs
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 20))  # 20 digits: int() stays cheap
        digits = data[pos:space]
        record_end = pos + int(digits) if space > pos and digits.isdigit() else -1
        if record_end <= space or record_end > end or data[record_end - 1] != 0x0A:
            raise SpkError(f"corrupt tar: invalid pax header at offset {at}")
        key, equals, value = data[space + 1 : record_end - 1].partition(b"=")
        if not equals:
            raise SpkError(f"corrupt tar: invalid pax header at offset {at}")
        # An empty value means "no override" (it cancels a global value, which we ignore).
        if key == b"path" and value:
            name = _text(value)
        elif key == b"size" and value:
            if not value.isdigit() or len(value) > 20:
                raise SpkError(f"corrupt tar: invalid pax size at offset {at}")
            size = int(value)
        pos = record_end
    return name, size


def _header_name(block: bytes) -> str:
    name = block[:100].partition(b"\0")[0]
    # POSIX ustar: a prefix completes long names (GNU tar keeps other fields there).
    if block[345] and block[257:263] == b"ustar\0":
        name = block[345:500].partition(b"\0")[0] + b"/" + name
    return _text(name)


def _text(name: bytes) -> str:
    # Names are only matched and quoted in messages: undecodable bytes must not break either.
    return name.decode("utf-8", "replace")


def _take(fh: IO[bytes], name: str, start: int, length: int, found: _Found) -> None:
    """Look at one regular member: read it if it is one we need, else note its name only."""
    while name.startswith("./"):
        name = name[2:]
    if name == "INFO":
        if length > MAX_INFO:
            raise SpkError(f"INFO too large ({length} bytes, limit {MAX_INFO})")
        found.info = _read(fh, start, length)
    elif name == "package.tgz":
        found.package_tgz = (start, length)
    elif name == "LICENSE":
        found.has_license = True
    elif name[-4:].upper() == ".PNG":
        upper = name.upper()
        if upper in ("PACKAGE_ICON.PNG", "PACKAGE_ICON_256.PNG"):
            data = _image(fh, name, start, length, found)
            if data is not None and upper == "PACKAGE_ICON.PNG":
                found.icon = data
            elif data is not None:
                found.icon_256 = data
        elif "/" not in name:
            # Ordered by number, not by string: screen_2 comes before screen_10.
            match = _SCREENSHOT.match(name)
            data = _image(fh, name, start, length, found) if match else None
            if match and data is not None:
                found.screenshots.append(((match.group(1).upper(), int(match.group(2)), name), data))
    elif name.startswith("WIZARD_UIFILES/"):
        wizard = _WIZARD.match(name)
        if wizard and wizard.group(1) == "install":
            found.install_wizard = True
        elif wizard:
            found.upgrade_wizard = True


def _image(fh: IO[bytes], name: str, start: int, length: int, found: _Found) -> bytes | None:
    """An icon or screenshot's bytes, or None (with a warning) when it cannot be used."""
    if length > MAX_IMAGE or found.image_bytes + length > MAX_IMAGES:
        found.warnings.append(f"{name}: too large ({length} bytes), ignored")
        return None
    data = _read(fh, start, length)
    if not data.startswith(PNG_SIGNATURE):
        found.warnings.append(f"{name}: not a PNG image, ignored")
        return None
    found.image_bytes += len(data)
    return data


def _read(fh: IO[bytes], start: int, length: int) -> bytes:
    fh.seek(start)
    data = fh.read(length)
    if len(data) < length:  # the walk checked the size: the file shrank while being read
        raise SpkError("truncated: the file changed while it was read")
    return data


def _verify_checksum(
    fh: IO[bytes],
    info: dict[str, str],
    tgz: tuple[int, int] | None,
    warnings: list[str],
) -> None:
    expected = info.get("checksum", "").strip().lower()
    if not expected or tgz is None:
        return
    digest = hashlib.md5()
    start, left = tgz
    fh.seek(start)
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


def _validate(info: dict[str, str], warnings: list[str], has_icon: bool, install_wizard: bool) -> None:
    """Add findings to `warnings`; raise SpkError (with them) for a fatal one."""
    reason: str | None = None
    for key in REQUIRED:
        if not info.get(key, "").strip():
            reason = reason or f"INFO: missing required key {key!r}"
    name = info.get("package", "")
    if name and _BAD_PACKAGE_NAME.search(name):
        reason = reason or f"INFO: invalid package name {name!r}"

    minimum = parse_firmware(info.get("os_min_ver") or info.get("firmware"))
    dsm7 = minimum is not None and minimum.major >= 7
    if "os_min_ver" not in info:
        warnings.append(f"INFO: a DSM 7 file (firmware {info['firmware']!r}) without os_min_ver, which DSM 7 requires"
                        if dsm7 else "INFO: os_min_ver missing (DSM 7 requires it)")
    for key in ("os_min_ver", "os_max_ver", "firmware"):
        if key in info and parse_firmware(info[key]) is None:
            warnings.append(f"INFO: {key} {info[key]!r} is not X.Y[.Z]-BUILD")
    if dsm7 and minimum is not None and minimum.build < DSM7_BUILD:
        warnings.append(f"INFO: minimum DSM 7 with build {minimum.build} (DSM 7 builds start at {DSM7_BUILD})")
    maximum = parse_firmware(info.get("os_max_ver"))
    if minimum is not None and maximum is not None and maximum.build < minimum.build:
        warnings.append(f"INFO: os_max_ver {info['os_max_ver']!r} is below the minimum "
                        f"{info.get('os_min_ver') or info.get('firmware')!r}: no NAS gets this file")
    for key in ("qinst", "qinstall"):  # qinst is the key the catalog reads (SPEC 1.5), and its longer spelling
        if install_wizard and truth(info.get(key)):
            warnings.append(f"INFO: {key}={info[key]} with an install wizard: Package Center may install it "
                            "without showing the wizard")

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
