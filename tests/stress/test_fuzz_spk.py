"""Fuzzed SPKs: the reader returns a Package or raises SpkError, nothing else.

Every case also checks that nothing is written anywhere (the reader's only
output is the `store` callback, here one that records) and, for the mutation
and crafted cases, that tracemalloc's peak stays under a fixed bound.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spkbuilder import DEFAULT_INFO, build_spk, info_text, make_png, tar_bytes

from spklite import spk
from stress import sized

pytestmark = pytest.mark.stress

MiB = 1 << 20
# Memory one read may use, whatever the file claims: parsing an INFO at the
# 1 MiB limit takes ~7 MiB (bytes, text, lines, values); nothing else comes close.
PEAK_BOUND = 12 * MiB
# Headers must not pile up: 10,000 members may cost no more than this.
MEMBERS_BOUND = 1 * MiB
SEEDS: Dict[str, Dict[str, Any]] = {
    "plain": {},
    "full": dict(icon_256=True, screenshots=3, license=True, install_wizard=True, upgrade_wizard=True),
    "base64": dict(icon_256=True, base64_icon=True),
    "dot_slash": dict(dot_slash=True, screenshots=2),
    "dsm6": dict(info={"os_min_ver": "6.2-25556", "version": "1.0.2b-3"}, empty_wizard_dir=True),
}


class Reader:
    """read_spk with a recording store, counting cases and checking the outcome."""

    def __init__(self, work: Path):
        self.work = work
        self.cases = 0
        self.outcomes = {"Package": 0, "SpkError": 0}
        self.stored: List[Tuple[int, str]] = []
        self.peak = 0
        self.last_peak = 0

    def store(self, data: bytes, suffix: str) -> str:
        assert isinstance(data, bytes) and suffix == ".png" and data.startswith(spk.PNG_SIGNATURE)
        self.stored.append((len(data), suffix))
        return spk.blob_name(data, suffix)

    def read(self, data: bytes, what: str, measure: bool = False) -> Any:
        """Write `data` to a file, read it, return the Package or the SpkError."""
        path = self.work / "case.spk"
        path.write_bytes(data)
        return self.read_path(path, what, measure)

    def read_path(self, path: Path, what: str, measure: bool = False) -> Any:
        self.cases += 1
        if measure:
            tracemalloc.start()
        try:
            result: Any = spk.read_spk(path, store=self.store)
        except spk.SpkError as exc:
            result = exc
            assert str(exc), f"{what}: empty rejection reason"
        except BaseException as exc:
            pytest.fail(f"{what}: read_spk raised {type(exc).__name__}: {exc!r}")
        finally:
            if measure:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                self.peak, self.last_peak = max(self.peak, peak), peak
                assert peak < PEAK_BOUND, f"{what}: peak memory {peak} bytes"
        self.outcomes[type(result).__name__] += 1
        if isinstance(result, spk.Package):  # a record must survive the snapshot round trip
            texts: Dict[str, int] = {}
            assert spk.Package.from_json(json.loads(json.dumps(result.to_json(texts))), list(texts)) == result, what
        return result


def tree(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Callable[[str], None]):
    """A Reader in an empty working folder; afterwards nothing may have appeared anywhere."""
    work, cwd = tmp_path / "work", tmp_path / "cwd"
    work.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a `../x` or relative extraction would land here
    r = Reader(work)
    yield r
    assert tree(cwd) == [], "the reader wrote into the working directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "work"]
    assert not (tmp_path.parent / "escaped").exists()
    figures(
        f"{r.cases} cases: {r.outcomes['Package']} read, {r.outcomes['SpkError']} rejected, "
        f"{len(r.stored)} images stored" + (f", peak {r.peak / MiB:.2f} MiB" if r.peak else "")
    )


def seed_bytes(work: Path, name: str) -> bytes:
    options = dict(SEEDS[name])
    info = {"package": f"seed-{name}", **options.pop("info", {})}
    return build_spk(work / f"seed-{name}.spk", info, **options).read_bytes()


def archive_end(data: bytes) -> int:
    """Where the end-of-archive zero blocks start."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        tar.getmembers()
        return tar.offset


def header_offsets(data: bytes) -> List[int]:
    """Where each member's ustar header block (and any extended header before it) starts."""
    offsets = set()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            offsets.update((member.offset, member.offset_data - 512))
    return sorted(offsets)


def reheader(data: bytes, at: int, field: slice, value: bytes) -> bytes:
    """Overwrite one field of the header block at `at` and fix its checksum, so tarfile believes it."""
    block = bytearray(data[at : at + 512])
    block[field] = value.ljust(field.stop - field.start, b"\0")[: field.stop - field.start]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return data[:at] + bytes(block) + data[at + 512 :]


NAME, SIZE, TYPE, LINK = slice(0, 100), slice(124, 136), slice(156, 157), slice(157, 257)
HOSTILE_NAMES = [
    b"../../escaped/x",
    b"/tmp/../escaped/x",
    b"INFO",
    b"./INFO",
    b"package.tgz",
    b"PACKAGE_ICON.PNG",
    b"screen_1.png",
    b"WIZARD_UIFILES/install_uifile",
    b"\xff\xfe",
    b"a" * 100,
    b"./././../INFO",
    b"\\..\\..\\x",
    b"%s",
]
HOSTILE_SIZES = [
    b"77777777777",
    b"00000000000",
    b"00000001000",
    b"\x80" + b"\xff" * 11,
    b"\xff" * 12,
    b"-1",
    b"99999999999",
    b"00000000777 ",
]
TYPES = b"0123456789gxLKSAMNVDI\0\xff"


def test_truncation_at_every_boundary(reader: Reader):
    """An interrupted copy at any block boundary (and one byte either side) is rejected."""
    for name in SEEDS:
        data = seed_bytes(reader.work, name)
        end = archive_end(data)
        assert isinstance(reader.read(data, f"{name} whole"), spk.Package)
        for boundary in range(0, len(data), 512):
            for cut in {max(boundary - 1, 0), boundary, boundary + 1}:
                result = reader.read(data[:cut], f"{name} cut at {cut}", measure=True)
                # Only a cut after the first end-of-archive block leaves a complete archive.
                assert isinstance(result, spk.Package) == (cut >= end + 512), f"{name} cut at {cut}"


def test_bit_flips(reader: Reader):
    rng = random.Random(20240607)
    seeds = {name: seed_bytes(reader.work, name) for name in SEEDS}
    for case in range(sized(400, 5000)):
        name = rng.choice(sorted(seeds))
        data = bytearray(seeds[name])
        # Mostly in the headers (where tarfile looks), sometimes anywhere.
        offsets = header_offsets(seeds[name])
        for _ in range(rng.randint(1, 8)):
            at = rng.choice(offsets) + rng.randrange(512) if rng.random() < 0.8 else rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        reader.read(bytes(data), f"bit flips case {case} of {name}", measure=True)


def test_header_fields_with_valid_checksums(reader: Reader):
    """Hostile names, sizes, types and link targets that tarfile accepts as well-formed headers."""
    rng = random.Random(7)
    seeds = {name: seed_bytes(reader.work, name) for name in SEEDS}
    choices = [(NAME, HOSTILE_NAMES), (SIZE, HOSTILE_SIZES), (LINK, HOSTILE_NAMES), (TYPE, [bytes([t]) for t in TYPES])]
    for case in range(sized(300, 3000)):
        name = rng.choice(sorted(seeds))
        data = seeds[name]
        for _ in range(rng.randint(1, 3)):
            field, values = rng.choice(choices)
            data = reheader(data, rng.choice(header_offsets(seeds[name])), field, rng.choice(values))
        reader.read(data, f"header case {case} of {name}", measure=True)


def special_members(work: Path) -> Dict[str, bytes]:
    """Crafted archives: links, devices, escapes, nesting, encodings, sheer size."""
    escaped = str(work.parent.parent / "escaped" / "x")
    good_info = info_text(DEFAULT_INFO)
    png = make_png(16)
    cases: Dict[str, bytes] = {}

    def archive(*members: tarfile.TarInfo, data: Optional[Dict[str, bytes]] = None) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for m in members:
                body = (data or {}).get(m.name)
                if body is not None:
                    m.size = len(body)
                tar.addfile(m, io.BytesIO(body) if body is not None else None)
        return buf.getvalue()

    def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
        m = tarfile.TarInfo(name)
        m.type, m.linkname = kind, link
        return m

    info = {"INFO": good_info, "PACKAGE_ICON.PNG": png}
    for kind, label in ((tarfile.SYMTYPE, "symlink"), (tarfile.LNKTYPE, "hardlink")):
        for target in ("/etc/passwd", "../../../etc/shadow", escaped, "package.tgz", "INFO"):
            cases[f"INFO {label} to {target}"] = archive(member("INFO", kind, target))
            cases[f"icon {label} to {target}"] = archive(
                member("INFO"), member("PACKAGE_ICON.PNG", kind, target), data=info
            )
    for kind, label in (
        (tarfile.CHRTYPE, "char device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
        (tarfile.DIRTYPE, "directory"),
    ):
        cases[f"INFO as {label}"] = archive(member("INFO", kind))
        cases[f"{label} beside INFO"] = archive(member("INFO"), member("dev/sda", kind), data=info)
    for name in ("../INFO", "/INFO", escaped, "../../escaped/PACKAGE_ICON.PNG", "./../screen_1.png"):
        cases[f"member named {name}"] = archive(member("INFO"), member(name), data={**info, name: png})
    cases["two INFO members"] = archive(
        member("INFO"), member("./INFO"), data={"INFO": good_info, "./INFO": b"package=other\n"}
    )
    inner = build_spk(work / "inner.spk", {"package": "inner"}).read_bytes()
    cases["spk as INFO"] = archive(member("INFO"), data={"INFO": inner})
    cases["spk as icon"] = archive(member("INFO"), member("PACKAGE_ICON.PNG"), data={**info, "PACKAGE_ICON.PNG": inner})
    cases["spk inside spk"] = tar_bytes([("INFO", good_info), ("inner.spk", inner), ("package.tgz", inner)])[0]
    cases["tar of tars of tars"] = tar_bytes([("x.tar", tar_bytes([("y.tar", inner)])[0]), ("INFO", good_info)])[0]
    cases["5 MB INFO line"] = tar_bytes([("INFO", b'description="' + b"x" * (5 * MiB) + b'"\n' + good_info)])[0]
    cases["1 MB INFO just under the limit"] = tar_bytes(
        [("INFO", good_info + b'changelog="' + b"<p>" * ((spk.MAX_INFO - 2000) // 3) + b'"\n')]
    )[0]
    cases["1 MB of junk INFO lines"] = tar_bytes([("INFO", good_info + b"x\n" * 500_000)])[0]
    long_name = "d/" * 60 + "PACKAGE_ICON.PNG"
    cases["long GNU and pax names"] = tar_bytes([("INFO", good_info), (long_name, png), ("é" * 200, b"x")])[0]
    for encoding in (
        "utf-16",
        "utf-16-le",
        "utf-32",
        "latin-1",
        "cp1252",
        "shift_jis",
        "gb18030",
        "koi8-r",
        "utf-8-sig",
        "utf-7",
    ):
        text = 'package="démo-日本"\nversion="1.0-1"\narch="noarch"\ndescription="ü"\n'
        cases[f"INFO in {encoding}"] = tar_bytes([("INFO", text.encode(encoding, errors="replace"))])[0]
    cases["INFO with NULs and CRs"] = tar_bytes([("INFO", good_info.replace(b"\n", b"\r\0\n"))])[0]
    cases["INFO with lone surrogates"] = tar_bytes([("INFO", good_info + b'x="\xed\xa0\x80"\n')])[0]
    cases["10,000 tiny members"] = tar_bytes([("INFO", good_info)] + [(f"m/{i}", b"x") for i in range(10_000)])[0]
    return cases


def test_crafted_archives(reader: Reader):
    cases = special_members(reader.work)
    for what, data in cases.items():
        result = reader.read(data, what, measure=True)
        if "tiny members" in what:
            assert reader.last_peak < MEMBERS_BOUND, f"{what}: peak {reader.last_peak} bytes"
        if "5 MB" in what:
            assert isinstance(result, spk.SpkError) and "too large" in str(result)
        if what in ("10,000 tiny members", "1 MB INFO just under the limit", "1 MB of junk INFO lines"):
            assert isinstance(result, spk.Package), f"{what}: {result}"
    # A header that claims a 2 GB GNU long name or pax record in a small file.
    small = seed_bytes(reader.work, "plain")
    for kind in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_SPARSE):
        data = reheader(reheader(small, 0, TYPE, kind), 0, SIZE, b"17777777777")
        reader.read(data, f"type {kind!r} claiming 2 GB", measure=True)
    # The same claim in a file that really is that large (sparse, so it costs no disk).
    big = reader.work / "big.spk"
    with open(big, "wb") as fh:
        fh.write(reheader(small, 0, TYPE, tarfile.XHDTYPE))
        fh.truncate(3 << 30)
    with open(big, "r+b") as fh:
        fh.write(reheader(reheader(small, 0, TYPE, tarfile.XHDTYPE), 0, SIZE, b"17777777777"))
    reader.read_path(big, "3 GB file whose first pax header claims 2 GB", measure=True)
    big.unlink()


# Property-based: whole archives drawn by hypothesis ######################################

NAMES = st.one_of(
    st.sampled_from(
        [
            "INFO",
            "./INFO",
            "package.tgz",
            "PACKAGE_ICON.PNG",
            "package_icon_256.png",
            "screen_1.png",
            "x_SCREEN_02.png",
            "LICENSE",
            "WIZARD_UIFILES/install_uifile_fre.sh",
            "WIZARD_UIFILES/",
            "scripts/postinst",
            "../../escaped/x",
            "/escaped",
            "./",
            ".",
            "",
        ]
    ),
    st.text(min_size=1, max_size=120),
)
KINDS = st.sampled_from(
    [tarfile.REGTYPE] * 6
    + [
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)
INFO_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["7.0-40000", "6.2-25556", "1.0-1", "noarch", "x86_64 armv8", "yes", "no", "1.2a-3", "", "\\", '"']
    ),
)
INFO_TEXT = st.one_of(
    st.dictionaries(
        st.sampled_from(
            sorted(DEFAULT_INFO)
            + ["beta", "package_icon", "checksum", "firmware", "os_max_ver", "startable", "PACKAGE"]
        ),
        INFO_VALUES,
    ).map(lambda d: info_text({**DEFAULT_INFO, **d})),
    st.binary(max_size=300),
)
MEMBER = st.tuples(
    NAMES,
    KINDS,
    st.one_of(INFO_TEXT, st.just(make_png(8)), st.binary(max_size=600)),
    st.sampled_from(["", "INFO", "/etc/passwd", "../../escaped/x"]),
)
ARCHIVE = st.tuples(
    st.lists(MEMBER, max_size=8),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    st.one_of(
        st.none(),
        st.tuples(st.sampled_from(["cut", "flip", "append"]), st.integers(0, 1 << 16), st.binary(max_size=1024)),
    ),
)


def draw_archive(
    members: List[Tuple[str, bytes, bytes, str]], fmt: int, mutation: Optional[Tuple[str, int, bytes]]
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, link in members:
            m = tarfile.TarInfo(name)
            m.type, m.linkname = kind, link
            try:
                if kind in tarfile.REGULAR_TYPES:
                    m.size = len(data)
                    tar.addfile(m, io.BytesIO(data))
                else:
                    tar.addfile(m)
            except (ValueError, UnicodeError):
                continue  # the format cannot hold this name; the mutations cover raw bytes
    data = buf.getvalue()
    if mutation:
        how, at, extra = mutation
        at %= len(data) + 1
        if how == "cut":
            data = data[:at]
        elif how == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        else:
            data = data[:at] + extra + data[at:]
    return data


@settings(
    max_examples=sized(500, 5000),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(archive=ARCHIVE)
def test_hypothesis_archives(reader: Reader, archive):
    result = reader.read(draw_archive(*archive), f"hypothesis {archive!r:.300}")
    if isinstance(result, spk.Package):
        for key in spk.REQUIRED:
            assert result.info[key].strip()
        assert not set(result.info) & set(spk.BASE64_ICON_KEYS)
