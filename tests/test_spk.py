"""The SPK reader (SPEC 2): real .spk files made by tests/spkbuilder.py."""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import json
import os
import string
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spkbuilder import (
    BROKEN_KINDS,
    DEFAULT_INFO,
    build_broken,
    build_spk,
    info_text,
    make_package_tgz,
    make_png,
    tar_bytes,
)

from spklite.spk import (
    MAX_IMAGE,
    MAX_IMAGES,
    MAX_INFO,
    Package,
    SpkError,
    blob_name,
    check,
    parse_info,
    read_spk,
)

PNG = b"\x89PNG\r\n\x1a\n"
SMALL, LARGE = make_png(72, (0x2A, 0x6F, 0xB5)), make_png(256, (0xB5, 0x6F, 0x2A))


class Recorder:
    """A store that keeps what it was given, to look at the stored bytes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def __call__(self, data: bytes, suffix: str) -> str:
        name = blob_name(data, suffix)
        self.blobs[name] = data
        return name


def read(path: Path, **kwargs) -> tuple[Package, Recorder]:
    store = Recorder()
    return read_spk(path, store, **kwargs), store


def rejection(path: Path) -> str:
    with pytest.raises(SpkError) as info:
        read_spk(path)
    return str(info.value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# The builder and a plain package ##################################################


def test_default_package_reads_clean(tmp_path):
    package, store = read(build_spk(tmp_path / "demo.spk"))
    assert package.info == DEFAULT_INFO  # what the builder wrote comes back, key for key
    assert package.icon == blob_name(SMALL, ".png") and store.blobs[package.icon] == SMALL
    assert package.icon_256 is None
    assert package.screenshots == ()
    assert not (package.has_license or package.install_wizard or package.upgrade_wizard)
    assert package.warnings == ()


def test_builder_is_deterministic_and_writes_a_plain_tar(tmp_path):
    one = build_spk(tmp_path / "a.spk", icon_256=True, screenshots=2, license=True)
    two = build_spk(tmp_path / "b.spk", icon_256=True, screenshots=2, license=True)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one, mode="r:") as tar:
        names = tar.getnames()
        inner = tar.extractfile("package.tgz").read()  # type: ignore[union-attr]
    assert {"INFO", "package.tgz", "scripts/start-stop-status", "LICENSE"} <= set(names)
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tgz:
        assert "bin/demo" in tgz.getnames()


def test_builder_omits_info_keys_given_as_none(tmp_path):
    package, _ = read(build_spk(tmp_path / "x.spk", {"maintainer": None, "beta": "yes"}))
    assert "maintainer" not in package.info and package.info["beta"] == "yes"


def test_blob_name_is_a_content_hash_with_the_suffix():
    assert blob_name(b"abc", ".png") == blob_name(b"abc", ".png")
    assert blob_name(b"abc", ".png") != blob_name(b"abd", ".png")
    assert blob_name(b"abc", ".png").endswith(".png")
    assert blob_name(b"abc", ".png")[:32] == hashlib.sha256(b"abc").hexdigest()[:32]


# INFO syntax (SPEC 2.2) ###########################################################


@pytest.mark.parametrize(
    "line, value",
    [
        ('key="value"', "value"),
        ("key=value", "value"),
        ("key='value'", "value"),
        ('key="say \\"hi\\""', 'say "hi"'),
        ('key="back\\\\slash"', "back\\slash"),
        ("key='no \\\" escapes'", 'no \\" escapes'),
        ('key="literal \\n stays"', "literal \\n stays"),
        ('key="a;b #c"', "a;b #c"),
        ("key=a;b #c", "a;b #c"),
        ('key = "spaced"', "spaced"),
        ('key="  inner spaces kept  "', "  inner spaces kept  "),
        ('key=""', ""),
        ("key=", ""),
        ('key="<b>HTML</b> & more"', "<b>HTML</b> & more"),
        # 2013 SynoCommunity INFO files hold unescaped inner quotes.
        ('key="keep a "want to watch"-list here"', 'keep a "want to watch"-list here'),
        ('key="a\u2028b"', "a\u2028b"),
    ],
)
def test_info_values(line, value):
    info, warnings = parse_info(line.encode("utf-8") + b"\n")
    assert info == {"key": value}
    assert warnings == []


def test_info_comments_blank_lines_case_and_last_wins():
    raw = b'# a comment\n\n   \n  # indented comment\nPackage="x"\nVERSION="1"\nversion="2"\n'
    info, warnings = parse_info(raw)
    assert info == {"package": "x", "version": "2"}
    assert warnings == []


def test_info_non_assignment_line_is_a_warning_not_fatal():
    info, warnings = parse_info(b'package="x"\nthis is not an assignment\narch="noarch"\n')
    assert info == {"package": "x", "arch": "noarch"}
    assert len(warnings) == 1 and "line 2" in warnings[0] and "not a key=value" in warnings[0]


def test_info_crlf_and_bom():
    info, warnings = parse_info(b'\xef\xbb\xbfpackage="x"\r\nversion=1.0\r\n')
    assert info == {"package": "x", "version": "1.0"}
    assert warnings == []


def test_info_latin1_is_decoded_with_a_warning():
    info, warnings = parse_info('description="café"\n'.encode("latin-1"))
    assert info == {"description": "café"}
    assert warnings == ["INFO is not UTF-8; read as Latin-1"]


def test_info_unterminated_quote_and_trailing_text_are_warnings():
    info, warnings = parse_info(b'a="open\nb="closed" trailing\n')
    assert info == {"a": "open", "b": "closed"}
    assert len(warnings) == 2
    assert "line 1" in warnings[0] and "unterminated" in warnings[0]
    assert "line 2" in warnings[1] and "after the closing quote" in warnings[1]


values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
keys = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


@given(st.dictionaries(keys, values, max_size=8))
def test_info_written_by_the_builder_parses_back(info):
    parsed, warnings = parse_info(info_text(info))
    assert parsed == info
    assert warnings == []


@given(st.binary(max_size=400))
def test_parse_info_never_raises(raw):
    info, warnings = parse_info(raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.items())
    assert all(isinstance(w, str) for w in warnings)


def test_latin1_info_in_a_package(tmp_path):
    raw = info_text({"package": "x", "version": "1-1", "arch": "noarch"}).replace(
        b"\n", b'\ndescription="r\xe9sum\xe9"\n', 1
    )
    package, _ = read(build_spk(tmp_path / "x.spk", extra_members={"INFO": raw}))
    assert package.info["description"] == "résumé"
    assert "INFO is not UTF-8; read as Latin-1" in package.warnings


# Rejections (SPEC 2.1, 2.3) #######################################################


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("gzip", "compressed tar (gzip) — SPKs must be uncompressed"),
        ("xz", "compressed tar (xz) — SPKs must be uncompressed"),
        ("encrypted", "encrypted Synology archive, cannot be read"),
        ("empty", "empty file"),
        ("random", "not a tar archive"),
        ("no_info", "INFO missing"),
        ("truncated", "truncated: file ends inside member 'package.tgz'"),
        ("no_eof", "truncated: the end-of-archive blocks are missing (interrupted copy?)"),
    ],
)
def test_broken_files_are_rejected_with_a_reason(tmp_path, kind, reason):
    assert rejection(build_broken(tmp_path / f"{kind}.spk", kind)) == reason


def test_every_broken_kind_is_covered():
    covered = {"gzip", "xz", "encrypted", "empty", "random", "no_info", "truncated", "no_eof"}
    assert set(BROKEN_KINDS) == covered


def test_bzip2_is_rejected_as_compressed(tmp_path):
    good = build_spk(tmp_path / "good.spk").read_bytes()
    path = tmp_path / "bz.spk"
    path.write_bytes(bz2.compress(good))
    assert rejection(path) == "compressed tar (bzip2) — SPKs must be uncompressed"


def test_gzip_with_another_name_is_still_gzip(tmp_path):
    path = tmp_path / "x.spk"
    path.write_bytes(gzip.compress(b"not even a tar"))
    assert "(gzip)" in rejection(path)


def _good_tar(tmp_path: Path) -> tuple[bytes, int]:
    """A valid SPK's bytes and the offset where its end-of-archive blocks start."""
    build_spk(tmp_path / "ref.spk")
    members = []
    with tarfile.open(tmp_path / "ref.spk", mode="r:") as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            members.append((m.name + ("/" if m.isdir() else ""), data))
    return tar_bytes(members)


def test_file_ending_inside_a_header_is_truncated(tmp_path):
    good, _ = _good_tar(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(good), mode="r:") as tar:
        second = tar.getmembers()[1]
    path = tmp_path / "cut.spk"
    path.write_bytes(good[: second.offset + 100])
    reason = rejection(path)
    assert reason.startswith("truncated: file ends inside a header"), reason


def test_file_ending_inside_the_first_header_is_truncated(tmp_path):
    good, _ = _good_tar(tmp_path)
    path = tmp_path / "cut.spk"
    path.write_bytes(good[:300])
    assert rejection(path).startswith("truncated: file ends inside the first header")


def test_short_non_tar_is_not_a_tar(tmp_path):
    path = tmp_path / "x.spk"
    path.write_bytes(b"hello, I am text\n")
    assert rejection(path) == "not a tar archive"


def test_garbage_after_the_members_is_corrupt(tmp_path):
    good, end = _good_tar(tmp_path)
    path = tmp_path / "x.spk"
    path.write_bytes(good[:end] + b"x" * 1024)
    assert rejection(path) == f"corrupt tar: invalid member header at offset {end}"


def test_one_end_block_is_enough(tmp_path):
    good, end = _good_tar(tmp_path)
    path = tmp_path / "x.spk"
    path.write_bytes(good[:end] + bytes(512))
    assert read_spk(path).info["package"] == "demo"


def test_all_zero_file_has_no_info(tmp_path):
    path = tmp_path / "zero.spk"
    path.write_bytes(bytes(10240))
    assert rejection(path) == "INFO missing"


def test_huge_info_is_rejected(tmp_path):
    raw = b'package="x"\n' + b"#" * MAX_INFO
    path = build_spk(tmp_path / "x.spk", extra_members={"INFO": raw})
    assert rejection(path).startswith("INFO too large")


@pytest.mark.parametrize("key", ["package", "version", "arch"])
def test_required_keys(tmp_path, key):
    assert rejection(build_spk(tmp_path / "x.spk", {key: None})) == (f"INFO: missing required key '{key}'")
    assert rejection(build_spk(tmp_path / "y.spk", {key: " "})) == (f"INFO: missing required key '{key}'")


@pytest.mark.parametrize("name", ["a b", "a:b", "a/b", "a<b", "a>b", "a|b", "a=b", "a\tb"])
def test_invalid_package_names(tmp_path, name):
    path = build_spk(tmp_path / "x.spk", {"package": name})
    assert rejection(path) == f"INFO: invalid package name {name!r}"


def test_dsm7_package_with_a_version_dsm7_refuses(tmp_path):
    path = build_spk(tmp_path / "x.spk", {"version": "1.2a-3"})
    assert rejection(path) == "INFO: invalid version '1.2a-3' (DSM 7 refuses it)"


def test_dsm6_package_with_that_version_only_warns(tmp_path):
    path = build_spk(tmp_path / "x.spk", {"version": "1.2a-3", "os_min_ver": "6.2-23739"})
    package, _ = read(path)
    assert package.info["version"] == "1.2a-3"
    assert "INFO: version '1.2a-3' would be refused by DSM 7" in package.warnings


@pytest.mark.parametrize("version", ["1", "1.0", "1.0-1", "1.2.3.4.5.6-7", "20130426-1"])
def test_versions_dsm7_accepts(tmp_path, version):
    package, _ = read(build_spk(tmp_path / "x.spk", {"version": version}))
    assert package.warnings == ()


def test_the_old_firmware_key_makes_a_dsm7_package_too(tmp_path):
    path = build_spk(tmp_path / "x.spk", {"os_min_ver": None, "firmware": "7.1-42661", "version": "v1"})
    assert rejection(path) == "INFO: invalid version 'v1' (DSM 7 refuses it)"


def test_missing_file_directory_fifo_and_bad_path(tmp_path):
    assert rejection(tmp_path / "absent.spk") == "cannot read: No such file or directory"
    assert rejection(tmp_path) == "not a regular file"
    fifo = tmp_path / "fifo.spk"
    os.mkfifo(fifo)
    assert rejection(fifo) == "not a regular file"  # and it did not hang
    with pytest.raises(SpkError, match="cannot read"):
        read_spk(str(tmp_path / "nul\0.spk"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = build_spk(tmp_path / "x.spk")
    path.chmod(0)
    assert rejection(path) == "cannot read: Permission denied"


def _mutations(good: bytes):
    return st.one_of(
        st.binary(max_size=3000),
        st.integers(0, len(good)).map(lambda n: good[:n]),
        st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda flips: _flip(good, flips)
        ),
    )


def _flip(data: bytes, flips) -> bytes:
    out = bytearray(data)
    for at, value in flips:
        out[at] = value
    return bytes(out)


def test_no_input_raises_anything_but_spkerror(tmp_path):
    build_spk(tmp_path / "good.spk", icon_256=True, screenshots=1, install_wizard=True)
    good = (tmp_path / "good.spk").read_bytes()
    target = tmp_path / "fuzz.spk"

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_mutations(good))
    def one(data):
        target.write_bytes(data)
        try:
            package = read_spk(target, verify_checksum=True)
        except SpkError as exc:
            assert str(exc)
        else:
            assert isinstance(package, Package)
        reason, warnings, _ = check(target)
        assert reason is None or isinstance(reason, str)

    one()


# The tar walker: header forms written by hand, byte by byte ######################

GOOD_INFO = info_text({"package": "walk", "version": "1.0-1", "arch": "noarch"})
END = bytes(1024)


def header(name: bytes, size: int | bytes, kind: bytes = b"0", *, signed: bool = False) -> bytes:
    """One ustar header block; `size` is a length or the raw 12-byte size field."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size if isinstance(size, int) else size
    assert len(block) == 512
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % total
    return bytes(block)


def entry(name: bytes, data: bytes, kind: bytes = b"0", size: int | bytes | None = None) -> bytes:
    """A header and its data, padded to whole blocks."""
    return header(name, len(data) if size is None else size, kind) + data + bytes(-len(data) % 512)


def pax(records: dict[str, bytes], kind: bytes = b"x") -> bytes:
    """A pax extended header: records "<length> <key>=<value>\n", the length counting itself."""
    body = b""
    for key, value in records.items():
        rest = b" " + key.encode() + b"=" + value + b"\n"
        length = len(rest) + 1
        while len(str(length)) + len(rest) != length:
            length += 1
        body += str(length).encode() + rest
    return entry(b"PaxHeader", body, kind)


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "hand.spk"
    path.write_bytes(data)
    return path


def test_hand_written_archive_reads(tmp_path):
    package, store = read(write(tmp_path, entry(b"INFO", GOOD_INFO) + entry(b"PACKAGE_ICON.PNG", SMALL) + END))
    assert package.info["package"] == "walk" and store.blobs[package.icon] == SMALL


def test_pax_path_and_size_describe_the_next_member(tmp_path):
    # The ustar fields say "junk", 0 bytes; the pax record wins, and the walk goes on after the data.
    data = (
        pax({"path": b"./INFO", "size": str(len(GOOD_INFO)).encode(), "mtime": b"1.5"})
        + header(b"junk", 0)
        + GOOD_INFO
        + bytes(-len(GOOD_INFO) % 512)
        + entry(b"PACKAGE_ICON.PNG", SMALL)
        + END
    )
    package, store = read(write(tmp_path, data))
    assert package.info["package"] == "walk" and store.blobs[package.icon] == SMALL


def test_pax_records_apply_to_one_member_only(tmp_path):
    data = pax({"path": b"INFO"}) + entry(b"first", GOOD_INFO) + entry(b"second", b"x") + END
    package, _ = read(write(tmp_path, data))
    assert package.info["package"] == "walk"  # "second" did not become INFO too (the last INFO wins)
    data = pax({"path": b"INFO"}) + entry(b"first", b"x") + entry(b"second", GOOD_INFO) + END
    assert rejection(write(tmp_path, data)) == "INFO: missing required key 'package'"  # "first" was INFO


def test_a_global_pax_header_is_skipped(tmp_path):
    data = pax({"path": b"INFO", "comment": b"x" * 2000}, kind=b"g") + entry(b"other", GOOD_INFO) + END
    assert rejection(write(tmp_path, data)) == "INFO missing"
    data = pax({"comment": b"x" * 2000}, kind=b"g") + entry(b"INFO", GOOD_INFO) + END
    assert read(write(tmp_path, data))[0].info["package"] == "walk"


@pytest.mark.parametrize(
    "body",
    [b"abc", b"12 path=INFO", b"5 path=INFO\n", b"99 path=INFO\n", b"13 pathINFO\n\n", b" 12 path=x\n"],
)
def test_invalid_pax_records(tmp_path, body):
    data = entry(b"INFO", GOOD_INFO) + entry(b"PaxHeader", body, b"x") + entry(b"x", b"x") + END
    assert rejection(write(tmp_path, data)) == "corrupt tar: invalid pax header at offset 1024"


def test_invalid_pax_size(tmp_path):
    data = entry(b"INFO", GOOD_INFO) + pax({"size": b"-1"}) + entry(b"x", b"x") + END
    assert rejection(write(tmp_path, data)) == "corrupt tar: invalid pax size at offset 1024"


def test_pax_records_padded_with_nuls(tmp_path):
    body = b"13 path=INFO\n" + bytes(30)
    data = entry(b"PaxHeader", body, b"x") + entry(b"junk", GOOD_INFO) + END
    assert read(write(tmp_path, data))[0].info["package"] == "walk"


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"K"])
def test_an_extended_header_without_its_member_is_corrupt(tmp_path, kind):
    data = entry(b"INFO", GOOD_INFO) + entry(b"././@LongLink", b"13 path=INFO\n", kind) + END
    assert rejection(write(tmp_path, data)) == "corrupt tar: the extended header at offset 1024 has no member"


def test_file_ending_inside_pax_data_is_truncated(tmp_path):
    full = entry(b"INFO", GOOD_INFO) + pax({"comment": b"x" * 1500}) + entry(b"y", b"y") + END
    assert rejection(write(tmp_path, full[: 1024 + 512 + 700])) == (
        "truncated: file ends inside an extended header at offset 1024"
    )


def test_gnu_long_name_and_long_link_name(tmp_path):
    long_name = b"./" * 60 + b"PACKAGE_ICON.PNG"
    data = (
        entry(b"INFO", GOOD_INFO)
        + entry(b"././@LongLink", b"some/very/long/link/target" * 10 + b"\0", b"K")
        + header(b"link", 0, b"2")
        + entry(b"././@LongLink", long_name + b"\0", b"L")
        + entry(b"PACKAGE_ICO", SMALL)  # the truncated name the header itself holds
        + END
    )
    package, store = read(write(tmp_path, data))
    assert store.blobs[package.icon] == SMALL


def test_ustar_prefix_completes_the_name(tmp_path):
    block = bytearray(header(b"install_uifile", 2))
    block[345:360] = b"WIZARD_UIFILES\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    data = entry(b"INFO", GOOD_INFO) + bytes(block) + b"[]" + bytes(510) + END
    assert read(write(tmp_path, data))[0].install_wizard


def test_base256_size(tmp_path):
    # GNU tar writes sizes of 8 GiB and more in base-256; any size may be written so.
    size = b"\x80" + len(GOOD_INFO).to_bytes(11, "big")
    assert read(write(tmp_path, entry(b"INFO", GOOD_INFO, size=size) + END))[0].info["package"] == "walk"
    huge = b"\x80" + (1 << 80).to_bytes(11, "big")
    assert rejection(write(tmp_path, entry(b"INFO", GOOD_INFO, size=huge) + END)) == (
        "truncated: file ends inside member 'INFO'"
    )


@pytest.mark.parametrize("field", [b"\xff" * 12, b"-0000000001\0", b"00000000019\0", b"1_0\0" + bytes(8), b"x" * 12])
def test_invalid_size_fields(tmp_path, field):
    data = entry(b"INFO", GOOD_INFO) + entry(b"x", b"", size=field) + END
    assert rejection(write(tmp_path, data)) == "corrupt tar: invalid size field in the header at offset 1024"


def test_size_fields_padded_with_spaces(tmp_path):
    size = (b"  %o \0" % len(GOOD_INFO)).ljust(12, b"\0")
    assert read(write(tmp_path, entry(b"INFO", GOOD_INFO, size=size) + END))[0].info["package"] == "walk"


def test_bad_checksum_is_a_corrupt_header(tmp_path):
    second = bytearray(entry(b"PACKAGE_ICON.PNG", SMALL))
    second[0] ^= 1  # one bit of the name: the stored checksum no longer matches
    data = entry(b"INFO", GOOD_INFO) + bytes(second) + END
    assert rejection(write(tmp_path, data)) == "corrupt tar: invalid member header at offset 1024"
    first = bytearray(data)
    first[0] ^= 1
    assert rejection(write(tmp_path, bytes(first))) == "not a tar archive"


def test_signed_checksums_of_old_tars(tmp_path):
    name = "é.txt".encode()  # bytes above 127: the signed sum differs from the unsigned one
    data = entry(b"INFO", GOOD_INFO) + header(name, 1, signed=True) + b"x" + bytes(511) + END
    assert read(write(tmp_path, data))[0].info["package"] == "walk"


def test_links_and_directories_have_no_data(tmp_path):
    # Their size field is ignored (tarfile and GNU tar agree): the next header follows at once.
    data = header(b"dir/", 4096, b"5") + header(b"INFO", 100, b"2") + entry(b"INFO", GOOD_INFO) + END
    assert read(write(tmp_path, data))[0].info["package"] == "walk"


def test_links_and_devices_named_like_members_are_not_read(tmp_path):
    data = header(b"INFO", 0, b"1") + header(b"INFO", 0, b"3") + entry(b"INFO/", GOOD_INFO) + END
    assert rejection(write(tmp_path, data)) == "INFO missing"


def test_old_gnu_sparse_member_is_skipped(tmp_path):
    block = bytearray(header(b"sparse", 3, b"S"))
    block[482] = 1  # one extension block of the sparse map follows
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    data = bytes(block) + bytes(512) + b"abc" + bytes(509) + entry(b"INFO", GOOD_INFO) + END
    assert read(write(tmp_path, data))[0].info["package"] == "walk"


def test_names_are_only_names(tmp_path):
    for name in (b"../INFO", b"/INFO", b"dir/../INFO", b"INF\xff"):
        assert rejection(write(tmp_path, entry(name, GOOD_INFO) + END)) == "INFO missing", name
    data = pax({"path": b"INFO\0hidden"}) + entry(b"x", GOOD_INFO) + END
    assert rejection(write(tmp_path, data)) == "INFO missing"


def test_undecodable_names_are_quoted_safely(tmp_path):
    reason = rejection(write(tmp_path, entry(b"\xff\xfeicon", b"x" * 2000)[:1024]))
    assert reason == "truncated: file ends inside member '\ufffd\ufffdicon'"


# Members: ./ prefixes, icons, screenshots, LICENSE, wizards (SPEC 1.5, 2.1) ########


def test_dot_slash_members(tmp_path):
    path = build_spk(
        tmp_path / "x.spk",
        icon_256=True,
        screenshots=2,
        license=True,
        install_wizard=True,
        upgrade_wizard=True,
        dot_slash=True,
    )
    with tarfile.open(path, mode="r:") as tar:
        assert all(name.startswith("./") for name in tar.getnames())
    package, store = read(path)
    assert package.info["package"] == "demo"
    assert store.blobs[package.icon] == SMALL and store.blobs[package.icon_256] == LARGE
    assert len(package.screenshots) == 2
    assert package.has_license and package.install_wizard and package.upgrade_wizard
    assert package.warnings == ()


@pytest.mark.parametrize(
    "small, large", [("package_icon.png", "package_icon_256.png"), ("Package_Icon.Png", "PACKAGE_ICON_256.png")]
)
def test_icon_names_in_any_case(tmp_path, small, large):
    path = build_spk(tmp_path / "x.spk", icon=False, extra_members={small: SMALL, large: LARGE})
    package, store = read(path)
    assert store.blobs[package.icon] == SMALL
    assert store.blobs[package.icon_256] == LARGE


def test_no_icon_is_a_warning(tmp_path):
    package, _ = read(build_spk(tmp_path / "x.spk", icon=False))
    assert package.icon is None and package.icon_256 is None
    assert "no icon (PACKAGE_ICON.PNG or INFO package_icon)" in package.warnings


def test_only_a_256_icon(tmp_path):
    package, store = read(build_spk(tmp_path / "x.spk", icon=False, icon_256=True))
    assert package.icon is None and store.blobs[package.icon_256] == LARGE
    assert not any("no icon" in w for w in package.warnings)


def test_icon_that_is_not_a_png_is_ignored(tmp_path):
    path = build_spk(tmp_path / "x.spk", extra_members={"PACKAGE_ICON.PNG": b"GIF89a..."})
    package, _ = read(path)
    assert package.icon is None
    assert "PACKAGE_ICON.PNG: not a PNG image, ignored" in package.warnings


def test_base64_icons_in_info(tmp_path):
    package, store = read(build_spk(tmp_path / "x.spk", base64_icon=True, icon_256=True))
    assert store.blobs[package.icon] == SMALL
    assert store.blobs[package.icon_256] == LARGE
    assert not any(key.startswith("package_icon") for key in package.info)
    assert package.warnings == ()


def test_base64_icon_120_is_the_fallback(tmp_path):
    path = build_spk(tmp_path / "x.spk", {"package_icon_120": b64(SMALL)}, icon=False)
    package, store = read(path)
    assert store.blobs[package.icon] == SMALL
    assert "package_icon_120" not in package.info


def test_member_icon_wins_over_base64(tmp_path):
    other = make_png(72, (1, 2, 3))
    path = build_spk(
        tmp_path / "x.spk",
        {"package_icon": b64(other), "package_icon_256": b64(other)},
        icon_256=True,
    )
    package, store = read(path)
    assert store.blobs[package.icon] == SMALL
    assert store.blobs[package.icon_256] == LARGE
    assert not any(key.startswith("package_icon") for key in package.info)


@pytest.mark.parametrize(
    "text, warning",
    [
        ("not base64 at all!", "INFO: package_icon is not valid base64, ignored"),
        (b64(b"GIF89a not a png"), "INFO: package_icon is not a PNG image, ignored"),
    ],
)
def test_bad_base64_icon_is_a_warning(tmp_path, text, warning):
    package, _ = read(build_spk(tmp_path / "x.spk", {"package_icon": text}, icon=False))
    assert package.icon is None
    assert warning in package.warnings
    assert "package_icon" not in package.info


def test_screenshots_in_number_order(tmp_path):
    shots = {f"screen_{n}.png": make_png(8, (n, n, n)) for n in (10, 2, 1)}
    package, store = read(build_spk(tmp_path / "x.spk", extra_members=shots))
    assert [store.blobs[name] for name in package.screenshots] == [
        shots["screen_1.png"],
        shots["screen_2.png"],
        shots["screen_10.png"],
    ]


def test_builder_screenshots(tmp_path):
    package, store = read(build_spk(tmp_path / "x.spk", screenshots=3))
    assert len(package.screenshots) == 3
    assert all(store.blobs[name].startswith(PNG) for name in package.screenshots)


def test_prefixed_screenshot_names_in_any_case(tmp_path):
    shots = {
        "PACKAGE_SCREEN_02.PnG": make_png(8, (2, 2, 2)),
        "PACKAGE_SCREEN_01.png": make_png(8, (1, 1, 1)),
        "Screen_3.PNG": make_png(8, (3, 3, 3)),
    }
    package, store = read(build_spk(tmp_path / "x.spk", extra_members=shots))
    assert sorted(store.blobs[name] for name in package.screenshots) == sorted(shots.values())
    assert len(package.screenshots) == 3


def test_other_pngs_are_not_screenshots(tmp_path):
    others = {name: make_png(8) for name in ("images/screen_1.png", "screenshot.png", "screen_.png", "screen_1.jpg")}
    package, _ = read(build_spk(tmp_path / "x.spk", extra_members=others))
    assert package.screenshots == ()


def test_screenshot_that_is_not_a_png_is_skipped(tmp_path):
    path = build_spk(tmp_path / "x.spk", extra_members={"screen_1.png": b"JFIF"})
    package, _ = read(path)
    assert package.screenshots == ()
    assert "screen_1.png: not a PNG image, ignored" in package.warnings


def test_oversized_image_is_skipped(tmp_path):
    big = PNG + bytes(MAX_IMAGE)
    path = build_spk(tmp_path / "x.spk", extra_members={"screen_1.png": big})
    package, _ = read(path)
    assert package.screenshots == ()
    assert f"screen_1.png: too large ({len(big)} bytes), ignored" in package.warnings


def test_images_of_one_package_are_capped_together(tmp_path):
    shots = {f"screen_{n}.png": PNG + bytes(MAX_IMAGE - len(PNG)) for n in range(1, 8)}
    package, _ = read(build_spk(tmp_path / "x.spk", icon=False, extra_members=shots))
    assert len(package.screenshots) == MAX_IMAGES // MAX_IMAGE == 6
    assert f"screen_7.png: too large ({MAX_IMAGE} bytes), ignored" in package.warnings


def test_license_flag(tmp_path):
    assert read(build_spk(tmp_path / "a.spk", license=True))[0].has_license
    assert not read(build_spk(tmp_path / "b.spk"))[0].has_license


@pytest.mark.parametrize(
    "members, install, upgrade",
    [
        ({"WIZARD_UIFILES/install_uifile": b"[]"}, True, False),
        ({"WIZARD_UIFILES/install_uifile_fre": b"[]"}, True, False),
        ({"WIZARD_UIFILES/install_uifile.sh": b"#!/bin/sh"}, True, False),
        ({"WIZARD_UIFILES/install_uifile_ger.sh": b"#!/bin/sh"}, True, False),
        ({"WIZARD_UIFILES/upgrade_uifile": b"[]"}, False, True),
        ({"WIZARD_UIFILES/upgrade_uifile_enu.sh": b"#!/bin/sh"}, False, True),
        ({"WIZARD_UIFILES/uninstall_uifile": b"[]"}, False, False),
        ({"WIZARD_UIFILES/notes.txt": b"x"}, False, False),
        ({"install_uifile": b"[]"}, False, False),
        ({"WIZARD_UIFILES/": b""}, False, False),
        ({"./WIZARD_UIFILES/install_uifile": b"[]"}, True, False),
    ],
)
def test_wizard_detection(tmp_path, members, install, upgrade):
    package, _ = read(build_spk(tmp_path / "x.spk", extra_members=members))
    assert (package.install_wizard, package.upgrade_wizard) == (install, upgrade)


def test_builder_wizard_flags(tmp_path):
    both = read(build_spk(tmp_path / "a.spk", install_wizard=True, upgrade_wizard=True))[0]
    empty = read(build_spk(tmp_path / "b.spk", empty_wizard_dir=True))[0]
    assert both.install_wizard and both.upgrade_wizard
    assert not empty.install_wizard and not empty.upgrade_wizard


def test_a_later_info_member_wins(tmp_path):
    later = info_text({"package": "demo", "version": "2.0-1", "arch": "noarch"})
    package, _ = read(build_spk(tmp_path / "x.spk", extra_members={"./INFO": later}))
    assert package.info["version"] == "2.0-1"


def test_store_failure_is_not_a_rejection(tmp_path):
    def broken_store(data: bytes, suffix: str) -> str:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        read_spk(build_spk(tmp_path / "x.spk"), broken_store)


# Only what is needed is read (SPEC 2.1) ############################################


def _bytes_read() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def _sparse_spk(path: Path, payload_size: int, checksum: str = "") -> Path:
    """An SPK whose package.tgz is `payload_size` zero bytes, written as a hole."""
    info = {
        "package": "big",
        "version": "1.0-1",
        "arch": "noarch",
        "os_min_ver": "7.0-40000",
        "displayname": "Big",
        "description": "big",
        "maintainer": "me",
    }
    if checksum:
        info["checksum"] = checksum
    head, end = tar_bytes([("INFO", info_text(info)), ("PACKAGE_ICON.PNG", SMALL)])
    member = tarfile.TarInfo("package.tgz")
    member.size = payload_size
    with open(path, "wb") as fh:
        fh.write(head[:end] + member.tobuf(tarfile.PAX_FORMAT))
        fh.seek(-(-payload_size // 512) * 512, os.SEEK_CUR)
        fh.write(bytes(1024))
    if os.stat(path).st_blocks * 512 > 16 << 20:
        pytest.skip("the temporary folder does not support sparse files")
    return path


needs_proc_io = pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="Linux only")


@needs_proc_io
def test_a_2gb_package_is_indexed_without_reading_it(tmp_path):
    # A checksum is set: only check() may hash package.tgz, never the indexer.
    path = _sparse_spk(tmp_path / "big.spk", 2 << 30, checksum="0" * 32)
    before = _bytes_read()
    package, store = read(path)
    spent = _bytes_read() - before
    assert package.info["package"] == "big" and store.blobs[package.icon] == SMALL
    assert package.warnings == ()
    assert spent < 1 << 20, f"read {spent} bytes of a {path.stat().st_size} byte file"


@needs_proc_io
def test_a_huge_extended_header_is_refused_unread(tmp_path):
    # A pax header is read whole to be parsed: one claiming 1 GiB must be refused, not read.
    path = tmp_path / "pax.spk"
    header = tarfile.TarInfo("PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 1 << 30
    head, end = tar_bytes([("INFO", info_text({"package": "p", "version": "1", "arch": "noarch"}))])
    with open(path, "wb") as fh:
        fh.write(head[:end] + header.tobuf(tarfile.USTAR_FORMAT))
        fh.seek(header.size, os.SEEK_CUR)
        fh.write(bytes(1024))
    before = _bytes_read()
    reason = rejection(path)
    assert _bytes_read() - before < 1 << 20
    assert reason.startswith("corrupt tar: a header or member claims 1073741824 bytes"), reason


@needs_proc_io
def test_the_byte_counter_sees_a_whole_read(tmp_path):
    # Proves the measurement above can fail: check() hashes package.tgz, which reads it.
    size = 32 << 20
    md5 = hashlib.md5(bytes(size)).hexdigest()
    path = _sparse_spk(tmp_path / "big.spk", size, checksum=md5)
    before = _bytes_read()
    assert check(path)[:2] == (None, [])
    assert _bytes_read() - before >= size


# Validation warnings (SPEC 2.3) and checksum ######################################


def test_missing_os_min_ver_is_a_warning(tmp_path):
    package, _ = read(build_spk(tmp_path / "x.spk", {"os_min_ver": None, "firmware": "3.0-1593"}))
    assert package.warnings == ("INFO: os_min_ver missing (DSM 7 requires it)",)


def test_unparsable_firmware_keys_are_warnings(tmp_path):
    path = build_spk(tmp_path / "x.spk", {"os_min_ver": "seven", "os_max_ver": "7.2"})
    package, _ = read(path)
    assert "INFO: os_min_ver 'seven' is not X.Y[.Z]-BUILD" in package.warnings
    assert "INFO: os_max_ver '7.2' is not X.Y[.Z]-BUILD" in package.warnings


def test_dsm7_minimum_below_the_first_dsm7_build(tmp_path):
    package, _ = read(build_spk(tmp_path / "x.spk", {"os_min_ver": "7.0-30000"}))
    assert any("DSM 7 builds start at 40000" in w for w in package.warnings)


@pytest.mark.parametrize("key", ["description", "maintainer", "displayname"])
def test_missing_recommended_keys(tmp_path, key):
    package, _ = read(build_spk(tmp_path / "x.spk", {key: None}))
    assert package.warnings == (f"INFO: missing recommended key '{key}'",)


def test_missing_package_tgz_is_a_warning(tmp_path):
    path = tmp_path / "x.spk"
    path.write_bytes(tar_bytes([("INFO", info_text({"package": "p", "version": "1", "arch": "noarch"}))])[0])
    package, _ = read(path)
    assert "package.tgz missing" in package.warnings


def test_checksum_is_verified_by_check_only(tmp_path):
    tgz = make_package_tgz()
    good = build_spk(tmp_path / "good.spk", {"checksum": hashlib.md5(tgz).hexdigest()})
    bad = build_spk(tmp_path / "bad.spk", {"checksum": "0" * 32})
    assert check(good)[:2] == (None, [])
    reason, warnings, _ = check(bad)
    assert reason is None
    assert warnings == [f"INFO: checksum {'0' * 32} does not match package.tgz (md5 {hashlib.md5(tgz).hexdigest()})"]
    assert read_spk(bad).warnings == ()  # the indexer does not hash package.tgz
    assert any("checksum" in w for w in read_spk(bad, verify_checksum=True).warnings)


def test_check_results(tmp_path):
    assert check(build_spk(tmp_path / "a.spk"))[:2] == (None, [])
    assert check(build_spk(tmp_path / "b.spk", {"maintainer": None}))[:2] == (
        None,
        ["INFO: missing recommended key 'maintainer'"],
    )
    reason, warnings, _ = check(build_spk(tmp_path / "c.spk", {"version": "1.2a-3", "description": None}))
    assert reason == "INFO: invalid version '1.2a-3' (DSM 7 refuses it)"
    assert warnings == ["INFO: missing recommended key 'description'"]
    assert check(build_broken(tmp_path / "d.spk", "gzip")) == (
        "compressed tar (gzip) — SPKs must be uncompressed",
        [],
        None,
    )
    assert check(build_spk(tmp_path / "e.spk", {"package": "e"}))[2].info["package"] == "e"
    assert check(tmp_path / "absent.spk")[0] == "cannot read: No such file or directory"


# The record and its JSON form ####################################################


def test_json_round_trip(tmp_path):
    path = build_spk(
        tmp_path / "x.spk",
        {"description": 'quotes " and \\ and ünïcode', "maintainer": None},
        icon_256=True,
        screenshots=3,
        license=True,
        install_wizard=True,
    )
    package = read_spk(path)
    assert package.warnings and package.screenshots
    texts: dict = {}
    data = json.loads(json.dumps(package.to_json(texts)))
    assert all(type(number) is int for number in data["info"].values())  # INFO texts are numbers in `texts`
    again = Package.from_json(data, list(texts))
    assert again == package
    assert isinstance(again.screenshots, tuple) and isinstance(again.warnings, tuple)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("icon"),
        lambda d: d.update(info=["not", "a", "dict"]),
        lambda d: d.update(has_license="yes"),
        lambda d: d.update(screenshots=[1, 2]),
        lambda d: d.update(info={"package": "x"}),  # a text where its number belongs
        lambda d: d.update(info={"package": 1000}),  # a number past the table
    ],
)
def test_from_json_refuses_a_damaged_record(tmp_path, damage):
    texts: dict = {}
    data = read_spk(build_spk(tmp_path / "x.spk")).to_json(texts)
    damage(data)
    with pytest.raises(ValueError):
        Package.from_json(data, list(texts))
