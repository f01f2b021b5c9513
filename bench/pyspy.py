"""Profiles of the server for figures that miss their target (py-spy, a dev tool in the venv).

py-spy samples the running process from outside; its "raw" output is one
line per distinct stack ("frame;frame;... count"). `summary` turns that into
the functions that take the largest share of the samples: inclusive (the
function or anything it calls) and self (the function's own code).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> Optional[str]:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_pid(pid: int, seconds: int, out: Path, rate: int = 250) -> subprocess.Popen:
    """Start sampling a running process for `seconds` (only the thread that holds the GIL)."""
    tool = py_spy()
    assert tool
    argv = [tool, "record", "--format", "raw", "-o", str(out), "-r", str(rate), "-d", str(seconds),
            "--gil", "--nonblocking", "-p", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def record_command(argv: Sequence[str], out: Path, log: Path, env: Dict[str, str], rate: int = 500
                   ) -> subprocess.Popen:
    """Start a command under py-spy: wall-clock samples of every thread, waiting included."""
    tool = py_spy()
    assert tool
    with open(log, "ab") as fh:
        return subprocess.Popen([tool, "record", "--format", "raw", "-o", str(out), "-r", str(rate),
                                 "--idle", "--", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env)


def short(frame: str) -> str:
    """`name (…/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:name`."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    parts = path.split("/")
    return f"{'/'.join(parts[-2:])}:{match.group('name')}"


# Frames that every sample of a thread passes through: they say nothing about where the time goes.
# Leaf frames of a thread that waits (for work, a lock, an event, the network): not busy.
IDLE = re.compile(r"Condition\.wait$|_wait_for_tstate_lock$|INotify\.read$|wasyncore\.py:poll$|Event\.wait$"
                  r"|:select$|:sleep$")
GENERIC = re.compile(r"^threading\.py:|handler_thread$|HTTPChannel\.service$|Task\.service$|WSGITask\.execute$"
                     r"|:<module>$|cli\.py:(main|run)$|server\.py:serve$|wasyncore\.py:loop$|\.run$"
                     r"|translate_proxy_headers$|_run_safely$")


def summary(raw: Path, top: int = 10, busy_only: bool = False
            ) -> Tuple[int, List[Tuple[str, float, float]], List[Tuple[str, float, float]]]:
    """(samples, hot spots, spklite's own functions), each row (function, inclusive share, self share).

    Hot spots: the largest self shares and the largest inclusive shares of functions that are not mere
    thread scaffolding. `busy_only` drops the samples of threads that wait (wall-clock profiles).
    """
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short(f) for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames or (busy_only and IDLE.search(frames[-1])):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return 0, [], []

    def row(name: str) -> Tuple[str, float, float]:
        return name, inclusive[name] / total, own[name] / total

    useful = [name for name, _ in inclusive.most_common() if not GENERIC.search(name)]
    hot = {name for name, _ in own.most_common(top)} | set(useful[:top])
    ours = [row(name) for name in useful if name.startswith("spklite/")][:top]
    return total, sorted((row(name) for name in hot), key=lambda r: (-r[1], -r[2])), ours


def markdown(title: str, raw: Path, note: str = "", top: int = 10, busy_only: bool = False) -> str:
    total, hot, ours = summary(raw, top, busy_only)
    if not total:
        return f"\n#### {title}\n\nno samples (py-spy could not attach?)\n"
    lines = [f"\n#### {title}\n", f"{total} samples{note}.\n",
             "| hot spot | inclusive | self |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {incl:.0%} | {own:.0%} |" for name, incl, own in hot]
    lines += ["", "| spklite's own functions | inclusive | self |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {incl:.0%} | {own:.0%} |" for name, incl, own in ours]
    return "\n".join(lines) + "\n"
