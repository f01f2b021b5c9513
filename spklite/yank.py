"""Release management in files: `yank`/`unyank` and `prune`.

Yanked files: kept on disk, no longer offered. The list lives in the cache folder (never in the packages
folder), keyed like the index (paths relative to the packages folder); a server re-reads it when its mtime
changes, so a yank is seen on the next request."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict

from spklite import synology
from spklite.index import atomic_write, open_index, printable

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

STATE_NAME = "yanked.json"
RECHECK = 0.25  # seconds between two looks at the file: a yank shows within that, a request pays no stat


class Yanked:
    """The yanked set of one cache folder, re-read only when the file's mtime changes."""

    def __init__(self, cache_dir: str):
        self.path = os.path.join(cache_dir, STATE_NAME)
        self._seen: Tuple[Any, FrozenSet[str]] = (None, frozenset())
        self._next_look = 0.0

    def current(self) -> Tuple[Any, FrozenSet[str]]:
        """(a stamp that changes with the file, the yanked keys)."""
        now = time.monotonic()
        if now < self._next_look:
            return self._seen
        self._next_look = now + RECHECK
        try:
            st = os.stat(self.path)
            stamp: Any = (st.st_mtime_ns, st.st_ino)  # a rewrite is a rename: a new inode even within a tick
        except OSError:
            stamp = None
        if stamp != self._seen[0]:
            self._seen = (stamp, self.read())
        return self._seen

    def read(self) -> FrozenSet[str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return frozenset()
        return frozenset(k for k in data if isinstance(k, str)) if isinstance(data, list) else frozenset()

    def write(self, keys: FrozenSet[str]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write(self.path, json.dumps(sorted(keys), indent=0).encode())


def key_of(root: str, name: str) -> Optional[str]:
    """The index key (path relative to the packages folder) of a file named on the command line."""
    full = os.path.abspath(name if os.path.exists(name) else os.path.join(root, name))
    rel = os.path.relpath(full, os.path.abspath(root))
    return None if rel.startswith(os.pardir) or os.path.isabs(rel) else rel


def yank_command(cfg: Mapping[str, Any], names: Any, yank: bool) -> int:
    """`spklite yank FILE...` / `unyank FILE...`."""
    state = Yanked(cfg["filesystem.cache"])
    keys = set(state.read())
    status = 0
    for name in names:
        key = key_of(cfg["filesystem.packages"], name)
        if key is None:
            print(f"error: {printable(name)}: not inside the packages folder", file=sys.stderr)
            status = 1
            continue
        if yank and not os.path.isfile(os.path.join(cfg["filesystem.packages"], key)):
            print(f"error: {printable(name)}: no such file", file=sys.stderr)
            status = 1
            continue
        (keys.add if yank else keys.discard)(key)
        print(f"{'yanked' if yank else 'unyanked'} {printable(key)}")
    state.write(frozenset(keys))
    return status


def prune_command(cfg: Mapping[str, Any], keep: int, remove: bool) -> int:
    """`spklite prune --keep N [--yes]`: every file but the N newest versions of each package per arch set.
    Yanked files neither count nor go (unyank is their way back); only files in the publish folder are removed."""
    from spklite.publish import identity, publish_folder  # here: publish needs the app, yank is the app's

    if keep < 1:
        print("error: --keep: at least 1 (a package keeps a version)", file=sys.stderr)
        return 2
    index = open_index(cfg)
    index.load_snapshot()
    index.scan()
    yanked = Yanked(cfg["filesystem.cache"]).read()
    groups: Dict[Any, List[Any]] = defaultdict(list)
    for record in index.current.records.values():
        if record.path not in yanked:
            package, _, arches = identity(record.package.info)
            groups[package, arches].append(record)
    root = os.path.realpath(cfg["filesystem.packages"])
    published = os.path.realpath(publish_folder(cfg))
    status = 0
    for _, records in sorted(groups.items(), key=lambda item: (item[0][0], sorted(item[0][1]))):
        versions = sorted({synology.version_key(r.package.info["version"]) for r in records}, reverse=True)
        for record in sorted(records, key=lambda r: r.path):
            if synology.version_key(record.package.info["version"]) in versions[:keep]:
                continue
            full = os.path.realpath(os.path.join(root, record.path))
            name = f"{printable(record.path)} ({record.package.info['package']} {record.package.info['version']})"
            if not full.startswith(published + os.sep):
                print(f"left alone (outside the publish folder): {name}")
            elif not remove:
                print(f"would remove: {name}")
            else:
                try:
                    os.remove(full)
                    print(f"removed: {name}")
                except OSError as exc:
                    print(f"error: {name}: {printable(exc.strerror or str(exc))}", file=sys.stderr)
                    status = 1
    return status
