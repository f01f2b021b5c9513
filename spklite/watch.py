"""Keep the index true while the server runs: inotify, or a stat poll (SPEC 3.3).

One thread. inotify reports close-after-write, metadata changes, moves and
deletions (never opens or reads: spklite reads its own files); overflow, a
vanished or replaced folder or a watch limit lead to a full re-scan, never a
crash. The folders holding the targets of symlinked package files are
watched too: a target replaced there makes no event in the link's folder.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time

from spklite.index import Index, is_candidate_name, printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Set

log = logging.getLogger(__name__)

SETTLE_MS = 50  # gather the burst of events a copy or a move makes
IDENTITY_CHECK = 2.0  # seconds between checks that the folder is still the one watched


class Watcher:
    """Does nothing: `--watch off` indexes at start-up only."""

    mode = "off"

    def stop(self) -> None:
        pass


class _Thread(Watcher):
    def __init__(self, index: Index):
        self.index = index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_safely, name=f"spklite-{self.mode}", daemon=True)

    def start(self) -> "_Thread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run_safely(self) -> None:
        while not self._stop.is_set():
            try:
                self.run()
            except Exception:  # the watcher must outlive any surprise
                log.exception("watcher failed; re-scanning in a second")
                self._stop.wait(1.0)
                self._rescan()

    def run(self) -> None:
        raise NotImplementedError

    def _rescan(self) -> None:
        try:
            self.index.scan()
        except Exception:
            log.exception("re-scan failed")


class Poller(_Thread):
    """Stat the tree every interval (network mounts, non-Linux, --watch poll)."""

    mode = "poll"

    def __init__(self, index: Index, interval: float):
        self.interval = max(0.1, interval)
        super().__init__(index)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.index.scan()


class Inotify(_Thread):
    """inotify on the folder and every subfolder."""

    mode = "inotify"

    def __init__(self, index: Index, interval: float):
        import inotify_simple  # Linux only; start() falls back to polling without it

        self.flags = inotify_simple.flags
        self.inotify = inotify_simple.INotify()
        # what makes a file worth a look (CREATE alone only for links: a new file is read once closed)
        self.changes = (self.flags.CLOSE_WRITE | self.flags.ATTRIB | self.flags.MOVED_TO | self.flags.MOVED_FROM
                        | self.flags.DELETE)
        self.file_mask = (self.changes | self.flags.CREATE | self.flags.DELETE_SELF | self.flags.MOVE_SELF
                          | self.flags.ONLYDIR)
        self.folders: Dict[int, str] = {}  # watch descriptor -> relative folder ("" = root)
        self.target_folders: Dict[int, str] = {}  # watch descriptor -> real folder holding symlink targets
        self._links: Mapping[str, str] = {}  # the index's links that target_folders were made for
        self.root_identity: Optional[tuple] = None
        self.poll_interval = interval
        self.fallback: Optional[Poller] = None
        super().__init__(index)
        self.watch_all()

    def stop(self) -> None:
        super().stop()
        if self.fallback:
            self.fallback.stop()
        self.inotify.close()

    # -- watches ----------------------------------------------------------------

    def watch_all(self) -> bool:
        """(Re)watch the root and every folder below it; False when the root is missing."""
        for wd in list(self.folders):
            self._unwatch(wd)
        try:
            st = os.stat(self.index.root)
        except OSError:
            self.root_identity = None
            return False
        self.root_identity = (st.st_dev, st.st_ino)
        return self.watch_tree("")

    def watch_tree(self, rel: str) -> bool:
        """Watch a folder and every folder below it (the index's walk: iterative, each folder once)."""
        for folder, _ in self.index.folders(rel):
            wd = self._add_watch(os.path.join(self.index.root, folder) if folder else self.index.root)
            if wd is None:
                return False
            if wd >= 0:
                self.folders.setdefault(wd, folder)  # a folder reached again by a new symlink keeps its name
        return True

    def watch_link_targets(self) -> None:
        """Watch the folders of symlink targets the index knows (when its links changed), then look again at
        the links into folders that were not watched yet: a change before the watch is not missed."""
        links = self.index.links
        if links is self._links:
            return
        self._links = links
        wanted = {os.path.dirname(target) for target in links.values()}
        for old, folder in list(self.target_folders.items()):
            if folder not in wanted:
                self._unwatch_targets(old)
        new = wanted - set(self.target_folders.values())
        for folder in new:
            wd = self._add_watch(folder)
            if wd is None:
                return
            if wd >= 0:
                self.target_folders[wd] = folder  # missing (dangling links): tried again when links change
        if new:
            self.index.update(sorted(rel for rel, target in links.items() if os.path.dirname(target) in new))

    def _add_watch(self, full: str) -> Optional[int]:
        """The watch descriptor; -1 when the folder cannot be watched; None at the watch limit (polling)."""
        try:
            return self.inotify.add_watch(full, self.file_mask)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._watch_limit()
                return None
            return -1  # vanished meanwhile, or unreadable: the scan reports it

    def _unwatch(self, wd: int) -> None:
        self.folders.pop(wd, None)
        if wd not in self.target_folders:  # one inode, one watch: a folder may be in the tree and hold targets
            self._rm_watch(wd)

    def _unwatch_targets(self, wd: int) -> None:
        self.target_folders.pop(wd, None)
        if wd not in self.folders:
            self._rm_watch(wd)

    def _rm_watch(self, wd: int) -> None:
        try:
            self.inotify.rm_watch(wd)
        except OSError:
            pass

    def _watch_limit(self) -> None:
        if self.fallback is None:
            log.warning("inotify watch limit reached (fs.inotify.max_user_watches): polling instead")
            self.mode = "poll"
            self.fallback = Poller(self.index, self.poll_interval)
            self.fallback.start()

    # -- events -----------------------------------------------------------------

    def run(self) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            events = self.inotify.read(timeout=500, read_delay=SETTLE_MS)
            if events:
                self.handle(events)
            self.watch_link_targets()
            if time.monotonic() - last_check > IDENTITY_CHECK:
                last_check = time.monotonic()
                self.check_root()

    def handle(self, events: list) -> None:
        f = self.flags
        changed: Set[str] = set()
        written: Set[str] = set()  # closed after writing: read again even when the signature looks unchanged
        rescan = False
        linked = self._links_by_target()
        target_names = {os.path.basename(target) for target in linked}  # realpath only for these names
        for event in events:
            if event.mask & f.Q_OVERFLOW:
                log.warning("inotify queue overflow: re-scanning")
                rescan = True
                continue
            folder = self.folders.get(event.wd)
            targets = self.target_folders.get(event.wd)
            if event.mask & (f.DELETE_SELF | f.MOVE_SELF | f.UNMOUNT | f.IGNORED):
                if folder == "":
                    log.warning("packages folder %s vanished or moved", printable(self.index.root))
                    rescan = True
                elif folder is not None:
                    self._unwatch(event.wd)
                if targets is not None:
                    self._unwatch_targets(event.wd)
                    changed.update(rel for target, rels in linked.items() if os.path.dirname(target) == targets
                                   for rel in rels)
                continue
            if folder is not None:
                rel = f"{folder}/{event.name}" if folder else event.name
                full = os.path.join(self.index.root, rel)
                if event.mask & f.ISDIR or self._is_folder_link(event, full):
                    self._folder_event(event, rel, changed)
                    continue
                made_whole = event.mask & f.CREATE and is_candidate_name(event.name) and made_by_linking(full)
                if event.mask & self.changes or made_whole:
                    changed.add(rel)
                    if event.mask & f.CLOSE_WRITE:
                        written.add(rel)
            elif targets is not None and not event.mask & f.ISDIR:
                full = os.path.join(targets, event.name)
            else:
                continue
            if event.name in target_names and event.mask & (self.changes | f.CREATE):
                for rel in linked.get(os.path.realpath(full), ()):
                    changed.add(rel)
                    if event.mask & f.CLOSE_WRITE:
                        written.add(rel)
        if rescan:
            self.check_root(force=True)
        elif changed:
            self.index.update(sorted(changed), reread=written)

    def _links_by_target(self) -> Dict[str, List[str]]:
        linked: Dict[str, List[str]] = {}
        for rel, target in self.index.links.items():
            linked.setdefault(target, []).append(rel)
        return linked

    def _is_folder_link(self, event: Any, full: str) -> bool:
        """A symlink to a folder made, moved or removed where symlinks are followed: a folder of the tree."""
        if not self.index.follow_symlinks or is_candidate_name(event.name):
            return False
        if event.mask & (self.flags.CREATE | self.flags.MOVED_TO):
            return os.path.islink(full) and os.path.isdir(full)
        return bool(event.mask & (self.flags.DELETE | self.flags.MOVED_FROM))

    def _folder_event(self, event: Any, rel: str, changed: Set[str]) -> None:
        f = self.flags
        if event.mask & (f.CREATE | f.MOVED_TO) and not event.name.startswith("."):
            self.watch_tree(rel)
            changed.update(self.index.walk(rel))
        elif event.mask & (f.DELETE | f.MOVED_FROM):
            for wd, name in list(self.folders.items()):
                if name == rel or name.startswith(rel + "/"):
                    self._unwatch(wd)
            self.index.remove_tree(rel)

    def check_root(self, force: bool = False) -> None:
        """Re-watch and re-scan when the folder vanished, came back or was replaced."""
        try:
            st = os.stat(self.index.root)
            identity: Optional[tuple] = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        if force or identity != self.root_identity:
            if identity is not None:
                log.info("watching %s again", printable(self.index.root))
            self.watch_all()
            self._rescan()


def made_by_linking(full: str) -> bool:
    """A symlink, or a hard link to a file already there: whole when made, never written (no CLOSE_WRITE)."""
    try:
        st = os.lstat(full)
    except OSError:
        return False
    return stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)


# inotify sees only changes made through this machine's kernel: not on these.
REMOTE_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
                      "fuse.sshfs", "fuse.rclone", "davfs", "fuse.davfs2")


def filesystem_type(path: str, mounts: str = "/proc/self/mounts") -> str:
    """The type of the filesystem holding `path` ("" when unknown)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open(mounts) as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def start(index: Index, mode: str, poll_interval: float) -> Watcher:
    """Start watching in the given mode (auto: inotify where it works, else polling)."""
    if mode == "off":
        return Watcher()
    if mode == "auto" and filesystem_type(index.root) in REMOTE_FILESYSTEMS:
        log.info("%s is on a network filesystem: polling", index.root)
    elif mode in ("auto", "inotify"):
        try:
            return Inotify(index, poll_interval).start()
        except (ImportError, OSError) as exc:
            if mode == "inotify":
                log.warning("inotify is not available (%s): polling instead", exc)
            else:
                log.info("inotify is not available (%s): polling", exc)
    return Poller(index, poll_interval).start()
