"""The packages folder as an index: {relative path: Record}, persisted as a JSON snapshot.

`Index.current` is an immutable `State` replaced as a whole; request threads
only read it, so they never wait for the indexer. All writers go through one
lock. The packages folder is only ever read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections import namedtuple

from spklite import __version__, spk

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import (
        IO,
        Any,
        Callable,
        Container,
        Dict,
        Iterable,
        Iterator,
        List,
        Mapping,
        Optional,
        Set,
        Tuple,
        Union,
    )

    Signature = Tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = 3  # 3: signatures hold ctime_ns
SNAPSHOT_NAME = "index.jsonl"
BLOB_DIR = "blobs"
TEMP_PREFIX = ".tmp-"  # atomic_write's temp files; a crash may leave some behind


SIGNATURE_FIELDS = ("size", "mtime_ns", "inode", "ctime_ns")


def signature_to_json(signature: Signature) -> Dict[str, int]:
    return dict(zip(SIGNATURE_FIELDS, signature))


def signature_from_json(data: Mapping[str, Any]) -> Signature:
    return (int(data["size"]), int(data["mtime_ns"]), int(data["inode"]), int(data["ctime_ns"]))


class Record(namedtuple("Record", "path size mtime_ns inode ctime_ns package md5", defaults=(None,))):
    """One valid package file."""

    __slots__ = ()
    path: str  # relative to the packages folder, "/"-separated
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int  # a same-size rewrite with its mtime put back (cp -p, rsync -t --inplace) still changes it
    package: spk.Package
    md5: Optional[str]

    @property
    def signature(self) -> Signature:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns)

    def to_json(self, texts: Dict[str, int]) -> Dict[str, Any]:
        return {
            "path": self.path,
            **signature_to_json(self.signature),
            "md5": self.md5,
            "package": self.package.to_json(texts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], texts: List[str]) -> "Record":
        """The inverse of to_json."""
        path, md5 = data["path"], data["md5"]
        if type(path) is not str or (md5 is not None and type(md5) is not str):
            raise ValueError("not a package record: path or md5 is not text")
        package = spk.Package.from_json(data["package"], texts)
        return cls(path, *signature_from_json(data), package, md5)


class Rejected(namedtuple("Rejected", "path reason signature")):
    """A .spk file that is not a valid package, and why."""

    __slots__ = ()
    path: str
    reason: str
    signature: Signature

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "reason": self.reason, **signature_to_json(self.signature)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Rejected":
        path, reason = data["path"], data["reason"]
        if type(path) is not str or type(reason) is not str:
            raise ValueError("not a rejected file: path or reason is not text")
        return cls(path, reason, signature_from_json(data))


class State(namedtuple("State", "version records rejected")):
    """An immutable view of the folder. `version` grows with every change."""

    __slots__ = ()
    version: int
    records: Mapping[str, Record]
    rejected: Mapping[str, Rejected]


def is_candidate_name(name: str) -> bool:
    """A file name the index looks at: visible and ending in .spk (so never *.part, *.tmp, *~)."""
    return not name.startswith(".") and name.lower().endswith(".spk")


def signature_of(st: os.stat_result) -> Signature:
    """What tells one version of a file from another without reading it (the one definition)."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def printable(path: str) -> str:
    """A path as one line of plain text (output, logs): bytes that were not UTF-8 (os.fsdecode made them lone
    surrogates) as \\xNN, control characters escaped. Never raises."""
    return path if path.isprintable() else "".join(_escaped(c) for c in path)


def _escaped(c: str) -> str:
    if c.isprintable():
        return c
    if "\udc80" <= c <= "\udcff":
        return "\\x%02x" % (ord(c) - 0xDC00)
    return c.encode("unicode_escape").decode("ascii")


class Index:
    """Owns the current State of one packages folder and keeps it true."""

    def __init__(
        self,
        packages_dir: str,
        cache_dir: str,
        *,
        follow_symlinks: bool = False,
        md5: bool = True,
    ):
        self.root = os.path.abspath(packages_dir)
        self.cache_dir = os.path.abspath(cache_dir)
        self.blob_dir = os.path.join(self.cache_dir, BLOB_DIR)
        self.snapshot_path = os.path.join(self.cache_dir, SNAPSHOT_NAME)
        self.follow_symlinks = follow_symlinks
        self.md5 = md5
        self.current = State(0, {}, {})
        self.stats = {"from_snapshot": 0, "parsed": 0}
        self.cache_error: Optional[str] = None
        # Candidate files that are symlinks -> their targets' real paths: a target can change where no watch on
        # the packages folder sees it (the watcher watches these too). Replaced as a whole, like `current`.
        # (A symlink on the way to a target replaced elsewhere is seen by a download's refresh, not here.)
        self.links: Mapping[str, str] = {}
        # Folders that could not be read when last walked -> why (the root as ""), and those already logged.
        self.unreadable: Dict[str, str] = {}
        self._reported: Set[str] = set()
        self.log_changes = False  # each file added, replaced, removed or rejected: once serving (not start-up)
        self.changed = time.time()  # when a file was last added, replaced, removed or rejected (/metrics)
        self._lock = threading.RLock()
        self._dirty = False

    # -- reading the folder ---------------------------------------------------

    def folders(self, under: str = "") -> Iterator[Tuple[str, List[os.DirEntry]]]:
        """Each folder at or under `under` (relative, "" = the root) once, with its visible entries by name.

        Iterative: a chain of thousands of nested folders costs no Python recursion (os.walk recursed
        before 3.12). A folder met again through symlinks (same device and inode) is skipped, so loops end;
        so are the cache folder and folders that cannot be read.
        """
        seen = set()
        try:
            st = os.stat(self.cache_dir)
            seen.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        pending = [under]
        while pending:
            rel = pending.pop()
            full = os.path.join(self.root, rel) if rel else self.root
            try:
                st = os.stat(full)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                with os.scandir(full) as found:
                    entries = sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)
            except OSError as exc:
                if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                    self.unreadable[rel] = f"{spk.UNREADABLE} folder: {exc.strerror or exc}"
                    if rel not in self._reported:
                        self._reported.add(rel)
                        log.warning("cannot read folder %s: %s", printable(full), exc.strerror or exc)
                continue
            self.unreadable.pop(rel, None)
            self._reported.discard(rel)
            yield rel, entries
            prefix = rel + "/" if rel else ""
            pending.extend(prefix + e.name for e in reversed(entries) if self._descends(e))

    def _descends(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir() and (self.follow_symlinks or not entry.is_symlink())
        except OSError:
            return False

    def candidates(self, under: str = "") -> Iterator[Tuple[str, bool]]:
        """(relative path, is a symlink) of every candidate file under the root or one of its folders."""
        for rel, entries in self.folders(under):
            prefix = rel + "/" if rel else ""
            for entry in entries:
                if is_candidate_name(entry.name) and not self._descends(entry):
                    try:
                        link = entry.is_symlink()  # known from the listing: no system call
                    except OSError:
                        link = False
                    yield prefix + entry.name, link

    def walk(self, under: str = "") -> Iterator[str]:
        """The relative path of every candidate file under the root (or under one of its folders)."""
        return (rel for rel, _ in self.candidates(under))

    def _outside(self, full: str) -> bool:
        real = os.path.realpath(full)
        return not real.startswith(os.path.realpath(self.root) + os.sep)

    def examine(self, rel: str, previous: State, reuse: bool = True) -> Optional[Any]:
        """The Record or Rejected for one path now, or None when it is gone or ignored.

        Reuses the previous entry when the stat signature is unchanged (unless not `reuse`).
        """
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        sig = signature_of(st)
        old = previous.records.get(rel) or previous.rejected.get(rel)
        if reuse and old is not None and old.signature == sig:
            return old
        if not self.follow_symlinks and os.path.islink(full) and self._outside(full):
            return Rejected(rel, "symbolic link to a file outside the packages folder "
                            "(set follow-symlinks to allow it)", sig)
        try:
            package = spk.read_spk(full, store=self.store_blob)
        except spk.SpkError as exc:
            return Rejected(rel, str(exc), sig)
        self.stats["parsed"] += 1
        # A file that changed while it was read is looked at again on its next event.
        return Record(rel, *sig, package)

    def store_blob(self, data: bytes, suffix: str) -> str:
        """Keep an icon or screenshot in the cache under its content hash."""
        name = spk.blob_name(data, suffix)
        target = os.path.join(self.blob_dir, name)
        if not os.path.exists(target):
            try:
                os.makedirs(self.blob_dir, exist_ok=True)
                atomic_write(target, data, durable=False)
            except OSError as exc:
                self._cache_failed(exc)
        return name

    def _cache_failed(self, exc: OSError) -> None:
        if self.cache_error is None:
            log.warning("cache folder %s is not writable (%s): serving from memory", printable(self.cache_dir), exc)
        self.cache_error = f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or self.cache_dir}"

    # -- changing the state -----------------------------------------------------

    def scan(self, progress: Optional[IO[str]] = None) -> State:
        """Reconcile the whole folder with the current state."""
        with self._lock:
            previous = self.current
            self.unreadable = {}
            if not os.path.isdir(self.root):
                if previous.records or previous.rejected:
                    log.warning("packages folder %s is not available", printable(self.root))
                self._set_links({})
                return self._publish({}, {}, previous)
            found = list(self.candidates())
            self._reported.intersection_update(self.unreadable)  # gone: logged again should it come back
            paths = [rel for rel, _ in found]
            records: Dict[str, Record] = {}
            rejected: Dict[str, Rejected] = {}
            # a symlink is never changed, only replaced (an event, an update): known targets are kept
            self._set_links({rel: self.links.get(rel) or self._target(rel) for rel, link in found if link})
            for n, rel in enumerate(paths, 1):
                self._sort_into(rel, self.examine(rel, previous), records, rejected)
                if progress is not None and (n % 50 == 0 or n == len(paths)):
                    progress.write(f"\rindexing {n}/{len(paths)}")
                    progress.flush()
            if progress is not None and paths:
                progress.write("\n")
            return self._publish(records, rejected, previous)

    def update(self, rels: Iterable[str], reread: Container[str] = ()) -> State:
        """Look again at some paths (from the watcher); those in `reread` are parsed even when their signature
        is unchanged (closed after writing: where times are coarse or not kept, a rewrite can keep it)."""
        rels = list(rels)
        with self._lock:
            previous = self.current
            records = dict(previous.records)
            rejected = dict(previous.rejected)
            links = dict(self.links)
            for rel in rels:
                records.pop(rel, None)
                rejected.pop(rel, None)
                links.pop(rel, None)
                if is_candidate_name(rel.rsplit("/", 1)[-1]):
                    if os.path.islink(os.path.join(self.root, rel)):
                        links[rel] = self._target(rel)
                    self._sort_into(rel, self.examine(rel, previous, rel not in reread), records, rejected)
            self._set_links(links)
            return self._publish(records, rejected, previous, changed=rels)

    def refresh(self, rel: str) -> Optional[Record]:
        """Look at one file again now and return its Record, if it is (still) a valid package.

        For the download route when the open file does not match the record: the folder changed in a way no
        event told (a symlink's target replaced, a change the settle window or the poll interval has not yet
        shown), so the next request is not answered 404 for what is there.
        """
        return self.update([rel]).records.get(rel)

    def problems(self, shown: Callable[[str], bool] = lambda key: True) -> Dict[str, str]:
        """What keeps the server from seeing the whole folder: {printable path: why}. Empty when all is well.

        `shown` picks by index key (a folder's ends in "/"): what one channel's visitors may see.
        """
        if not os.path.isdir(self.root):
            return {printable(self.root): "packages folder does not exist or is not a folder"}
        found = {printable(os.path.join(self.root, rel) if rel else self.root): why
                 for rel, why in self.unreadable.items() if shown(rel + "/")}
        found.update((printable(os.path.join(self.root, rel)), r.reason) for rel, r in self.current.rejected.items()
                     if r.reason.startswith(spk.UNREADABLE) and shown(rel))
        return found

    def remove_tree(self, prefix: str) -> State:
        """Forget every path at or under a relative folder (moved out, deleted)."""
        with self._lock:
            previous = self.current
            keep = lambda p: not (p == prefix or p.startswith(prefix + "/"))  # noqa: E731
            records = {p: r for p, r in previous.records.items() if keep(p)}
            rejected = {p: r for p, r in previous.rejected.items() if keep(p)}
            self._set_links({p: t for p, t in self.links.items() if keep(p)})
            return self._publish(records, rejected, previous)

    def _target(self, rel: str) -> str:
        return os.path.realpath(os.path.join(self.root, rel))

    def _set_links(self, links: Dict[str, str]) -> None:
        # Equal links keep the same object: the watcher re-watches target folders only when `links` is another.
        if links != self.links:
            self.links = links

    @staticmethod
    def _sort_into(rel: str, found: Any, records: Dict[str, Record], rejected: Dict[str, Rejected]) -> None:
        # Keyed by the entry's own path (equal to rel): a kept entry's, not a second copy from this walk.
        if isinstance(found, Record):
            records[found.path] = found
        elif isinstance(found, Rejected):
            rejected[found.path] = found

    def _publish(self, records: Dict[str, Record], rejected: Dict[str, Rejected], previous: State,
                 changed: Optional[List[str]] = None) -> State:
        """Make (records, rejected) the current state, in path order, unless nothing changed. `changed`: the only
        paths that can differ from `previous` (an update): at 50,000 files, comparing and sorting them all took
        ~0.1 s per new file."""
        if changed is None:
            if records == previous.records and rejected == previous.rejected:
                return previous
        elif all(records.get(p) == previous.records.get(p) and rejected.get(p) == previous.rejected.get(p)
                 for p in changed):
            return previous
        if self.log_changes:
            log_changes(previous, records, rejected, changed)
        # Replaced and removed paths keep the order: only new ones need a sort (of the keys: sorting the items
        # compares tuples, 20 times slower).
        if changed is None or any(p in records and p not in previous.records for p in changed):
            records = {p: records[p] for p in sorted(records)}
        if changed is None or any(p in rejected and p not in previous.rejected for p in changed):
            rejected = {p: rejected[p] for p in sorted(rejected)}
        self.current = State(previous.version + 1, records, rejected)
        self.changed = time.time()
        self._dirty = True
        return self.current

    # -- md5, off the request path ------------------------------------------------

    def pending_md5(self) -> List[Record]:
        return [r for r in self.current.records.values() if r.md5 is None] if self.md5 else []

    def fill_md5(self, records: Iterable[Record], stop: Optional[threading.Event] = None,
                 publish_every: float = 0.5) -> int:
        """Hash files and publish their md5s (in batches: each publication is a new state)."""
        done: Dict[str, Tuple[Record, str]] = {}
        last = time.monotonic()
        count = 0
        for record in records:
            if stop is not None and stop.is_set():
                break
            digest = self._md5_of(record, stop)
            if digest:
                done[record.path] = (record, digest)
            if done and time.monotonic() - last >= publish_every:
                count += self._publish_md5(done)
                done, last = {}, time.monotonic()
        return count + self._publish_md5(done)

    def _md5_of(self, record: Record, stop: Optional[threading.Event]) -> Optional[str]:
        digest = hashlib.md5()
        try:
            with spk.open_regular(os.path.join(self.root, record.path)) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    if stop is not None and stop.is_set():
                        return None
                    digest.update(chunk)
                if signature_of(os.fstat(fh.fileno())) != record.signature:
                    return None  # changed meanwhile: its new version gets its own turn
        except OSError:
            return None
        return digest.hexdigest()

    def _publish_md5(self, done: Mapping[str, Tuple[Record, str]]) -> int:
        with self._lock:
            previous = self.current
            records = dict(previous.records)
            count = 0
            for path, (record, digest) in done.items():
                if records.get(path) == record:
                    records[path] = record._replace(md5=digest)
                    count += 1
            if count:
                self.current = State(previous.version + 1, records, previous.rejected)
                self._dirty = True
            return count

    # -- the snapshot -------------------------------------------------------------

    def load_snapshot(self) -> bool:
        """Start from the saved snapshot when it is ours; False when it was not usable.

        Read a line at a time: one file's JSON is gone before the next is read, so the load's peak memory is
        a line's whatever the folder holds (a whole document at once peaked ~4 MiB over the index at 1,000).
        """
        self._remove_stale_temps()
        records: Dict[str, Record] = {}
        rejected: Dict[str, Rejected] = {}
        try:
            with open(self.snapshot_path, encoding="utf-8") as fh:  # text: json.loads(bytes) would guess per line
                header = json.loads(fh.readline())
                if header.get("schema") != SNAPSHOT_SCHEMA:
                    raise ValueError(f"schema {header.get('schema')!r}, expected {SNAPSHOT_SCHEMA}")
                if header.get("folder") != self.root:
                    raise ValueError(f"made for folder {header.get('folder')!r}")
                texts = header["texts"]
                if type(texts) is not list or not spk.all_str(texts):
                    raise ValueError("texts is not a list of text")
                for line in fh:
                    entry = json.loads(line)
                    if "reason" in entry:
                        found = Rejected.from_json(entry)
                        rejected[found.path] = found
                    else:
                        record = Record.from_json(entry, texts)
                        records[record.path] = record
        except FileNotFoundError:
            return False
        except Exception as exc:  # any damage means: rebuild
            log.warning("ignoring snapshot %s: %s", printable(self.snapshot_path), printable(str(exc)))
            return False
        with self._lock:
            self.current = State(self.current.version + 1, records, rejected)
            self.stats["from_snapshot"] = len(records) + len(rejected)
        return True

    def _remove_stale_temps(self) -> None:
        """Delete the temp files of writes a crash interrupted (kill -9, power cut): never renamed, never used."""
        for folder in (self.cache_dir, self.blob_dir):
            remove_temps(folder, TEMP_PREFIX)

    def save_snapshot(self, force: bool = False) -> bool:
        """Write the snapshot atomically when something changed since the last write."""
        with self._lock:
            if not (self._dirty or force):
                return False
            state = self.current
            self._dirty = False
        # JSON Lines: a header, then one line per file. INFO values are numbers in the header's "texts": the
        # versions, platforms and DSM builds of one package repeat its texts (at 1,000 files one value in ten
        # is distinct); loaded, each text is one object shared by its records.
        # The lines go to a temporary file as they are made, the header (whose texts they fill) before them
        # in the snapshot: at 50,000 files, lists of them all peaked at +50 MiB. Every few hundred lines the
        # GIL is handed over, so requests are not held by this thread (~2 s at 50,000 files).
        texts: Dict[str, int] = {}
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.cache_dir, prefix=TEMP_PREFIX) as body:
                entries = itertools.chain((r.to_json(texts) for r in state.records.values()),
                                          (r.to_json() for r in state.rejected.values()))
                for n, entry in enumerate(entries, 1):
                    body.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
                    if n % 256 == 0:
                        time.sleep(0)
                header = {
                    "schema": SNAPSHOT_SCHEMA,
                    "spklite": __version__,
                    "folder": self.root,
                    "written": time.time(),
                    "texts": list(texts),
                }
                body.seek(0)
                chunks = itertools.chain([json.dumps(header, separators=(",", ":")).encode() + b"\n"],
                                         iter(lambda: body.read(1 << 20), b""))
                atomic_write(self.snapshot_path, chunks)
        except OSError as exc:
            self._dirty = True
            self._cache_failed(exc)
            return False
        self.cache_error = None
        return True


def log_changes(previous: State, records: Mapping[str, Record], rejected: Mapping[str, Rejected],
                paths: Optional[List[str]] = None) -> None:
    """One line for each file that changed between two states (an operator's view of the folder's life); when
    `paths` are given, only these can have changed."""
    if paths is not None:
        paths = sorted(set(paths))
        records = {p: records[p] for p in paths if p in records}
        rejected = {p: rejected[p] for p in paths if p in rejected}
        previous = State(previous.version, {p: previous.records[p] for p in paths if p in previous.records},
                         {p: previous.rejected[p] for p in paths if p in previous.rejected})
    for rel, record in records.items():
        old = previous.records.get(rel)
        if old is None or old.signature != record.signature:
            info = record.package.info
            log.info("%s %s: %s %s", "replaced" if old else "added", printable(rel), info["package"], info["version"])
    for rel, found in rejected.items():
        if previous.rejected.get(rel) != found:
            log.warning("rejected %s: %s", printable(rel), printable(found.reason))
    for rel in (*previous.records, *previous.rejected):
        if rel not in records and rel not in rejected:
            log.info("removed %s", printable(rel))


def remove_temps(folder: str, prefix: str, older_than: float = 0) -> None:
    """Delete the files in `folder` whose name starts with `prefix` (and last changed more than `older_than`
    seconds ago): temp files a crash left (never renamed)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            if older_than and time.time() - os.lstat(os.path.join(folder, name)).st_mtime < older_than:
                continue
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def atomic_write(path: str, data: Union[bytes, Iterable[bytes]], durable: bool = True) -> None:
    """Old or new content at every instant: temp file, fsync, rename, fsync the folder. `data`: bytes, or
    pieces of them.

    Not `durable`: no fsync (icons can be extracted again; thousands of fsyncs make a slow cold start).
    """
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in [data] if isinstance(data, bytes) else data:
                fh.write(piece)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_index(cfg: Mapping[str, Any]) -> Index:
    return Index(
        cfg["filesystem.packages"],
        cfg["filesystem.cache"],
        follow_symlinks=cfg["follow-symlinks"],
        md5=cfg["md5"],
    )


def scan_command(cfg: Mapping[str, Any], out: IO[str]) -> int:
    """`spklite scan`: refresh the snapshot and print a summary."""
    index = open_index(cfg)
    index.load_snapshot()
    started = time.monotonic()
    index.scan(progress=sys.stderr if sys.stderr.isatty() else None)
    index.fill_md5(index.pending_md5())
    index.save_snapshot(force=True)
    state = index.current
    reconfigure = getattr(out, "reconfigure", None)
    if reconfigure is not None:  # a terminal that cannot show a name gets escapes, not a traceback
        reconfigure(errors="backslashreplace")
    out.write(
        f"{len(state.records)} packages, {len(state.rejected)} rejected in {printable(index.root)} "
        f"({index.stats['from_snapshot']} from snapshot, {index.stats['parsed']} parsed, "
        f"{time.monotonic() - started:.2f} s)\n"
    )
    for rel, rejected in state.rejected.items():  # one line each, whatever the names hold
        out.write(f"rejected: {printable(rel)}: {printable(rejected.reason)}\n")
    failed = index.problems()
    for path, why in failed.items():
        out.write(f"error: {path}: {printable(why)}\n")
    if index.cache_error:
        out.write(f"error: snapshot not written: {printable(index.cache_error)}\n")
    return 1 if failed or index.cache_error else 0
