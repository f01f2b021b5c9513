"""spklite benchmark (`make bench`): one markdown table of figures, each beside its reference.

Issue 3 (the live index): start-up to the first correct catalog answer (cold, warm, empty folder), RSS,
visibility of a new package, catalog latency with five 100 MB SPKs in the folder.
Issue 4 (performance): catalog throughput against the floor of the stack, round-robin NAS profiles,
downloads against a bare waitress app, range downloads, memory, clients that disconnect.
Issue 14: catalog throughput with counting (/metrics, /v1/stats) on against off.

Everything runs in a temporary folder that is removed at the end. Figures are medians of repeated runs.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import corpus
import drive
import pyspy as spy
from drive import Process, fetch, load, median_of

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REPO = HERE.parent
MB = 1 << 20
LARGE_SIZE = 100 * MB

DSM7 = ("/?arch=apollolake&build=42661&major=7&minor=1&language=enu"
        "&unique=synology_apollolake_918%2B&package_update_channel=stable")
DSM6_BODY = "arch=armada38x&build=25556&major=6&minor=2&language=enu&unique=synology_armada38x_ds218j"
# 16 different NAS: platform/model x DSM build x language x channel.
NAS = (("apollolake", "918+"), ("geminilake", "920+"), ("armada38x", "ds218j"), ("rtd1296", "ds218"),
       ("alpine", "ds416"), ("evansport", "ds214play"), ("88f6282", "ds112j"), ("denverton", "1819+"))
DSM = (("25556", "6", "2"), ("42661", "7", "1"), ("64570", "7", "2"), ("42218", "7", "0"))
PROFILES = [
    f"/?arch={arch}&build={DSM[i % 4][0]}&major={DSM[i % 4][1]}&minor={DSM[i % 4][2]}"
    f"&language={('enu', 'fre', 'ger', 'jpn')[i // 4]}&unique=synology_{arch}_{model.replace('+', '%2B')}"
    f"&package_update_channel={('stable', 'beta')[i % 3 == 2]}"
    for i, (arch, model) in enumerate(NAS * 2)
]


# gosspks (not vendored: built from its source for the measurement) beside spklite on this machine, by
# bench/gosspks.py with the bench's corpus; see bench/gosspks.md for the date, the method and the full table.
GOSSPKS_MEASURED = "2026-12-05"
GOSSPKS = {  # N: (catalog DSM 7 GET req/s with 16 clients, warm start s, RSS after start MiB)
    100: (4177, 0.051, 15.9),
    1000: (1575, 0.337, 19.6),
    10000: (156, 1.744, 50.9),
}


@dataclass
class Row:
    figure: str
    value: str
    reference: str = "—"
    ratio: str = "—"
    target: str = "—"
    ok: Optional[bool] = None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def waitress_settings() -> Dict[str, Any]:
    """spklite's own waitress settings (its defaults), for the floor."""
    from spklite import config, server

    with tempfile.TemporaryDirectory() as home:  # no config file: the defaults
        cfg = config.load({"home": home}, {}, create_file=False)
    options = server.waitress_options(cfg)
    for key in ("host", "port"):
        options.pop(key)
    return {k: sorted(v) if isinstance(v, set) else v for k, v in options.items()}


def check(ratio: float, limit: float, at_least: bool) -> bool:
    return ratio >= limit if at_least else ratio <= limit


def normalized(body: bytes) -> str:
    """A catalog answer without md5s (they appear when the background hashing is done) and ports."""
    data = json.loads(re.sub(rb"//127\.0\.0\.1:\d+/", b"//127.0.0.1/", body))
    entries = data["packages"] if isinstance(data, dict) else data
    for entry in entries:
        entry.pop("md5", None)
    return json.dumps(data, sort_keys=True)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.rows: List[Row] = []
        self.notes: List[str] = []
        self.profiles: List[str] = []
        self.procs: List[Process] = []
        self.misses: List[str] = []
        self.ours: Dict[str, float] = {}  # figures shown beside gosspks' (GOSSPKS)
        self.log_dir = work / "logs"
        self.log_dir.mkdir()
        self.settings = waitress_settings()
        self.load_before = f"{os.getloadavg()[0]:.1f}"  # other work on the machine skews every figure
        # Python processes run as an installed spklite does: compiled bytecode is cached (here in the work
        # folder, not in the source tree), whatever PYTHONDONTWRITEBYTECODE says in this shell.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        self.say("installing spklite into a fresh venv, as a user would")
        program = self.installed(sys.executable, self.work / "venv")
        if program is None:
            self.notes.append("the editable development install ran instead: its start-up also loads its path "
                              "finder (~15 ms)")
        self.program = program or str(BIN / "spklite")

    def installed(self, python: str, venv: Path) -> Optional[str]:
        """spklite as `pip install .` puts it on a machine, for `python`; None (and a note) when it cannot be. The
        development venv's editable install loads a path finder at every interpreter start (pathlib,
        urllib.parse: ~15 ms) that no real install has."""
        try:
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True,
                           stdout=subprocess.DEVNULL)
            return str(venv / "bin" / "spklite")
        except (OSError, subprocess.CalledProcessError) as exc:
            self.notes.append(f"spklite could not be installed into a venv for {python} ({exc})")
            return None

    # -- helpers -------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    def add(self, figure: str, value: str, reference: str = "—", ratio: Optional[float] = None,
            target: str = "—", ok: Optional[bool] = None, key: str = "") -> None:
        self.rows.append(Row(figure, value, reference, "—" if ratio is None else f"{ratio:.2f}", target, ok))
        if ok is False and key:
            self.misses.append(key)

    def spklite(self, name: str, folder: Path, home: Path, *extra: str, env: Optional[Dict[str, str]] = None
                ) -> Process:
        port = drive.free_port()
        argv = [self.program, "--home", str(home), "--packages", str(folder), "--port", str(port),
                "--host", "127.0.0.1", *extra]
        proc = Process(name, argv, self.log_dir / f"{name}.log", port, env or self.env)
        self.procs.append(proc)
        return proc

    def floor(self, size: int, file: Optional[Path] = None) -> Process:
        """The stack's floor: a constant body of `size` bytes on /, `file` on any other path."""
        port = drive.free_port()
        argv = [sys.executable, str(HERE / "floor.py"), str(port), json.dumps(self.settings), str(size)]
        argv += [str(file)] if file else []
        proc = Process(f"floor-{port}", argv, self.log_dir / f"floor-{port}.log", port, self.env)
        self.procs.append(proc)
        proc.start().wait_answer("/", timeout=30)
        return proc

    def plain_floor(self, body: bytes) -> Process:
        """The raw server: a plain WSGI function answering `body` with spklite's headers."""
        port = drive.free_port()
        answer = self.log_dir / f"answer-{port}.json"
        answer.write_bytes(body)
        argv = [sys.executable, str(HERE / "floor.py"), str(port), json.dumps(self.settings), "--wsgi", str(answer)]
        proc = Process(f"plain-{port}", argv, self.log_dir / f"plain-{port}.log", port, self.env)
        self.procs.append(proc)
        proc.start().wait_answer("/", timeout=30)
        return proc

    def pairs(self, label: str, ours: Process, floor: Process, **request: Any
              ) -> Tuple[Dict[str, float], Dict[str, float]]:
        got, refs = self.interleaved([(label, ours, [floor], request)])[label]
        return got, refs[0]

    def interleaved(self, jobs: Sequence[Tuple[str, Process, Sequence[Process], Dict[str, Any]]]
                    ) -> Dict[str, Tuple[Dict[str, float], List[Dict[str, float]]]]:
        """Rounds of runs, spklite then its references (floors) for each job, so that drift and other load
        on the machine hit all alike; per job the medians (spklite, [each reference])."""
        seconds = self.args.seconds
        for _, ours, refs, request in jobs:  # warm up: memo, caches, connections
            for proc in (ours, *refs):
                load(proc.port, seconds=1, **request)
        runs: Dict[str, List[List[Dict[str, float]]]] = {job[0]: [[] for _ in range(1 + len(job[2]))] for job in jobs}
        for _ in range(self.args.runs):
            for label, ours, refs, request in jobs:
                for i, proc in enumerate((ours, *refs)):
                    runs[label][i].append(self.measured(proc, seconds, request))
        result = {}
        for label, measured in runs.items():
            got, *refs = [median_of(m) for m in measured]
            if got["errors"] or any(ref["errors"] for ref in refs):
                self.notes.append(f"{label}: {got['errors']:.0f} errors (spklite), "
                                  f"{', '.join(str(round(ref['errors'])) for ref in refs)} (references)")
            result[label] = (got, refs)
        return result

    @staticmethod
    def measured(proc: Process, seconds: float, request: Dict[str, Any]) -> Dict[str, float]:
        """One load run, with the server's CPU time per request (ms)."""
        cpu = proc.cpu_seconds()
        result = load(proc.port, seconds=seconds, **request)
        result["cpu_ms"] = (proc.cpu_seconds() - cpu) * 1000 / max(1, result["requests"])
        return result

    def runs(self, port: int, **request: Any) -> Dict[str, float]:
        return median_of([load(port, seconds=self.args.seconds, **request) for _ in range(self.args.runs)])

    # -- issue 3: start-up -----------------------------------------------------------------------------

    def start_once(self, name: str, folder: Path, home: Path, settle: bool,
                   env: Optional[Dict[str, str]] = None) -> Tuple[float, bytes, float]:
        """Seconds to the first catalog answer, that answer, RSS (MiB) once settled."""
        proc = self.spklite(name, folder, home, env=env).start()
        try:
            seconds, body = proc.wait_answer(DSM7)
            rss = 0.0
            if settle:
                proc.settle()
                time.sleep(0.2)
                rss = proc.rss_mb()
            return seconds, body, rss
        finally:
            proc.stop()

    def floor_start(self) -> float:
        """Seconds from exec to the first answer of the stack's floor (Bottle + waitress, a constant body)."""
        python = str(Path(self.program).parent / "python")  # the same interpreter and packages as spklite
        port = drive.free_port()
        argv = [python, str(HERE / "floor.py"), str(port), json.dumps(self.settings), "15"]
        proc = Process(f"floor-start-{port}", argv, self.log_dir / f"floor-start-{port}.log", port, self.env)
        try:
            return proc.start().wait_answer("/")[0]
        finally:
            proc.stop()

    def startups(self, folders: Dict[str, Path]) -> None:
        """Rounds of: empty folder, then per N a cold start (it leaves the snapshot) and a warm one."""
        runs, sizes = self.args.runs, (1000, 2000)
        # One start not counted: compiled bytecode and the page cache are warm for every measured start
        # ("cold" means no snapshot, not a cold disk).
        self.start_once("discarded", folders["1000"], self.work / "home-discarded", False)
        starts: Dict[str, List[Tuple[float, bytes, float]]] = {}
        for r in range(runs):
            self.say(f"start-ups, round {r + 1}/{runs}")
            shutil.rmtree(self.work / "home-empty", ignore_errors=True)
            starts.setdefault("floor", []).append((self.floor_start(), b"", 0.0))
            starts.setdefault("empty", []).append(
                self.start_once("empty", folders["empty"], self.work / "home-empty", True))
            for n in sizes:
                home = self.work / f"home-{n}"
                shutil.rmtree(home / "cache", ignore_errors=True)
                starts.setdefault(f"cold {n}", []).append(self.start_once(f"cold-{n}", folders[str(n)], home, True))
                starts.setdefault(f"warm {n}", []).append(self.start_once(f"warm-{n}", folders[str(n)], home, True))

        def median(key: str, item: int) -> float:
            return statistics.median(start[item] for start in starts[key])

        t_empty, rss_empty = median("empty", 0), median("empty", 2)
        self.add("S1 start-up of the stack's floor (Bottle + waitress, constant body)", ms(median("floor", 0)))
        self.add("S1 start-up, empty folder (to first catalog answer)", ms(t_empty), f"floor {ms(median('floor', 0))}",
                 t_empty / median("floor", 0))
        # Without any bytecode cache, as from a .pyz (zipimport never caches compiled code).
        uncached = dict(self.env, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(self.work / "no-pycache"))
        t_uncached = statistics.median(
            self.start_once("uncached", folders["empty"], self.work / "home-empty", False, uncached)[0]
            for _ in range(runs))
        self.add("S1 start-up, empty folder, no bytecode cache (as a .pyz runs)", ms(t_uncached),
                 f"cached {ms(t_empty)}", t_uncached / t_empty)
        for n in sizes:
            proc = self.spklite(f"reference-{n}", folders[str(n)], self.work / f"home-{n}").start()
            proc.wait_answer(DSM7)
            reference = normalized(fetch(proc.port, DSM7)[1])
            proc.stop()
            firsts = [body for key in (f"cold {n}", f"warm {n}") for _, body, _ in starts[key]]
            wrong = sum(normalized(body) != reference for body in firsts)
            correct = "" if not wrong else f" ({wrong} WRONG answers)"
            judged = n == 1000
            t_cold, t_warm, rss = median(f"cold {n}", 0), median(f"warm {n}", 0), median(f"warm {n}", 2)
            self.ours.update({f"warm {n}": t_warm, f"rss {n}": rss})
            self.add(f"S2 cold start (no snapshot), N={n}", ms(t_cold) + correct, f"empty {ms(t_empty)}",
                     t_cold / t_empty, "≤ 600 ms" if judged else "—",
                     t_cold <= 0.6 and not wrong if judged else None, key="cold" if judged else "")
            ok = t_warm <= 1.5 * t_empty and t_warm <= 0.25 and not wrong
            self.add(f"S3 warm start (snapshot), N={n}", ms(t_warm) + correct, f"empty {ms(t_empty)}",
                     t_warm / t_empty, "≤ 1.5× empty and ≤ 250 ms" if judged else "—",
                     ok if judged else None, key="warm" if judged else "")
            self.add(f"S4 · 5 RSS after start, N={n}", f"{rss:.1f} MiB", f"empty folder {rss_empty:.1f} MiB",
                     rss / rss_empty, "≤ 25 MB (Go: 24.7)" if judged else "—",
                     rss <= 25 if judged else None, key="rss" if judged else "")

    # -- issue 12.1: the shipped forms start like the installed package ---------------------------------

    def pyz_startups(self, folder: Path) -> None:
        """Warm start (snapshot there) of the pyz in the forms the packages run it, beside a `pip install`ed
        spklite on the same Python, in rounds: Python 3.9 and 3.13, N=100 (~40 s)."""
        pyz = self.work / "spklite.pyz"
        subprocess.run([sys.executable, str(REPO / "tools" / "build_pyz.py"), "-o", str(pyz)], check=True,
                       stdout=subprocess.DEVNULL)
        forms: Dict[str, Dict[str, List[str]]] = {}
        for version in ("3.9", "3.13"):
            python = pyenv_python(version)
            if not python:
                self.notes.append(f"pyz start-up on Python {version} not measured: no pyenv Python {version}")
                continue
            self.say(f"pyz start-ups: installing spklite for Python {version}")
            venv = self.work / f"venv-{version}"
            if not self.installed(python, venv):
                continue
            home = self.work / f"pyz-{version}"
            conf = home / "openwrt"  # as /etc/init.d/spklite renders it: a config file, the cache given again
            conf.mkdir(parents=True)
            (conf / "config.yml").write_text(f'spklite:\n  host: "127.0.0.1"\n  filesystem:\n    packages: '
                                             f'"{folder}"\n    cache: "{home / "ow-cache"}"\n')
            wrapper = home / "spklite.sh"  # /usr/bin/spklite
            wrapper.write_text(f'#!/bin/sh\nexec {python} -I {pyz} "$@"\n')
            wrapper.chmod(0o755)
            forms[version] = {
                "installed": [str(venv / "bin" / "spklite"), "--home", str(home / "installed"),
                              "--packages", str(folder)],
                # DSM's start-stop-status (systemd: the same, home and cache from the environment)
                "pyz": [python, "-I", str(pyz), "serve", "--home", str(home / "pyz"), "--packages", str(folder)],
                "openwrt": [str(wrapper), "serve", "--home", str(conf), "--config", str(conf / "config.yml"),
                            "--cache", str(home / "ow-cache")],
                # -B: no bytecode written, so compiled at every start, as the pyz ran before issue 12
                "no bytecode": [python, "-I", "-B", str(pyz), "serve", "--home", str(home / "no-bytecode"),
                                "--packages", str(folder)],
            }

        def start(argv: List[str]) -> Tuple[float, float]:
            """Seconds to the first catalog answer, and the CPU seconds the process used until then (less
            swayed by other load on the machine)."""
            port = drive.free_port()
            proc = Process("pyz-start", [*argv, "--host", "127.0.0.1", "--port", str(port)],
                           self.log_dir / "pyz-start.log", port, self.env).start()
            try:
                seconds = proc.wait_answer(DSM7)[0]
                tasks = Path(f"/proc/{proc.pid}/task").glob("*/schedstat")  # ns on a CPU: finer than ticks
                return seconds, sum(int(task.read_text().split()[0]) for task in tasks) / 1e9
            finally:
                if proc.proc:
                    proc.proc.kill()  # its shutdown is no part of a start: the files it needs are written by now
                proc.stop()

        firsts = {version: start(argvs["pyz"])[0] for version, argvs in forms.items()}  # extracts into the cache
        for argvs in forms.values():
            for form, argv in argvs.items():
                if form != "pyz":
                    start(argv)  # the snapshot, the config file and its kept parse, the compiled modules
        starts: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
        rounds = 7
        for r in range(rounds):
            self.say(f"pyz start-ups, round {r + 1}/{rounds}")
            for version, argvs in forms.items():
                for form, argv in argvs.items():
                    starts.setdefault((version, form), []).append(start(argv))

        def median(version: str, form: str) -> Tuple[float, float]:
            runs = starts[(version, form)]
            return statistics.median(t for t, _ in runs), statistics.median(cpu for _, cpu in runs)

        for version in forms:
            installed, installed_cpu = median(version, "installed")
            self.add(f"P1 warm start, Python {version}, N=100: `pip install`ed spklite",
                     f"CPU {ms(installed_cpu)}, wall {ms(installed)}")
            for form, label, target in (
                    ("pyz", "spklite.pyz (DSM package, systemd)", True),
                    ("openwrt", "spklite.pyz, OpenWrt service (wrapper, config file)", True),
                    ("no bytecode", "spklite.pyz without bytecode (as before issue 12)", False)):
                got, cpu = median(version, form)
                ratio = cpu / installed_cpu
                self.add(f"P1 warm start, Python {version}, N=100: {label}",
                         f"CPU {ms(cpu)}, wall {ms(got)} ({got / installed:.2f}×)",
                         f"installed: CPU {ms(installed_cpu)}, wall {ms(installed)}", ratio,
                         "≤ 1.15× installed" if target else "—", ratio <= 1.15 if target else None,
                         key="pyz start" if target else "")
            first = firsts[version]
            self.add(f"P1 first start of a new spklite.pyz, Python {version} (extracts into the cache; no snapshot)",
                     f"wall {ms(first)}", f"installed, warm: wall {ms(installed)}", first / installed)
        self.notes.append("P1: the ratio is of the CPU time the process used until its first catalog answer (all its "
                          "threads, /proc schedstat): wall times of adjacent starts vary by ±50% while other work "
                          "shares the machine; the wall-clock ratio is given beside each value")

    # -- issue 4: catalog throughput -------------------------------------------------------------------

    def throughput(self, s100: Process, s1000: Process, quiet: Process) -> Dict[str, Process]:
        """Catalog req/s against the Bottle floor and, for the four cases of issue 12.4, against the raw server
        (a plain WSGI function answering the same bytes); `quiet` is the N=1000 server without its access log."""
        cases: List[Tuple[str, Process, Dict[str, Any]]] = [
            ("DSM 7 GET, N=100", s100, {"paths": [DSM7]}),
            ("DSM 7 GET, N=1000", s1000, {"paths": [DSM7]}),
            ("DSM 6 POST, N=100", s100, {"paths": ["/"], "method": "POST", "body": DSM6_BODY}),
            ("DSM 6 POST, N=1000", s1000, {"paths": ["/"], "method": "POST", "body": DSM6_BODY}),
            ("DSM 7 GET gzip, N=1000", s1000, {"paths": [DSM7], "header": "Accept-Encoding: gzip"}),
            ("16 NAS profiles round-robin, N=1000", s1000, {"paths": PROFILES}),
        ]
        floors: Dict[int, Process] = {}
        jobs: List[Tuple[str, Process, List[Process], Dict[str, Any]]] = []
        sizes_of, plain = {}, []
        for label, proc, request in cases:
            sizes = []
            for path in request["paths"]:
                gz = "header" in request
                status, body = fetch(proc.port, path, request.get("method", "GET"), request.get("body"),
                                     {"Accept-Encoding": "gzip"} if gz else None)
                if status != 200 or not json.loads(gzip.decompress(body) if gz else body)["packages"]:
                    raise RuntimeError(f"{label}: {status} {body[:200]!r}")
                sizes.append(len(body))
            size = round(statistics.mean(sizes))
            if size not in floors:
                floors[size] = self.floor(size)
            refs = [floors[size]]
            if "round-robin" not in label:  # issue 12.4: the raw server, answering exactly these bytes
                refs.append(self.plain_floor(body))
                plain.append(refs[-1])
            jobs.append((label, proc, refs, dict(request, conns=16)))
            if proc is s1000 and "round-robin" not in label:  # like with like: no access log either
                jobs.append((f"{label}, access log off", quiet, refs[1:], dict(request, conns=16)))
            sizes_of[label] = size
        self.say(f"catalog throughput: {len(jobs)} cases × {self.args.runs} rounds")
        got = self.interleaved(jobs)
        raw = {label: (ours, refs[-1]) for label, (ours, refs) in got.items() if len(refs) == 2 or "log off" in label}
        got = {label: (ours, refs[0]) for label, (ours, refs) in got.items() if "log off" not in label}
        for proc in plain:
            proc.stop()
        for label, (ours, ref) in got.items():
            size = sizes_of[label]
            ratio = ours["rps"] / ref["rps"]
            number = "2" if "round-robin" in label else "1"
            limit = 0.7 if number == "2" else 0.85
            judged = "N=1000" in label
            self.add(f"{number} catalog {label}, 16 clients: req/s ({size // 1024} KiB)", f"{ours['rps']:.0f}/s",
                     f"floor {ref['rps']:.0f}/s", ratio, f"≥ {limit} × floor" if judged else "—",
                     check(ratio, limit, True) if judged else None, key=f"catalog {label}")
            self.add(f"{number} catalog {label}: p99 latency", f"{ours['p99']:.1f} ms", f"floor {ref['p99']:.1f} ms",
                     ours["p99"] / ref["p99"])
            self.add(f"{number} catalog {label}: server CPU per request", f"{ours['cpu_ms'] * 1000:.0f} µs",
                     f"floor {ref['cpu_ms'] * 1000:.0f} µs", ours["cpu_ms"] / ref["cpu_ms"])
        for label, (ours, ref) in raw.items():
            ratio = ours["rps"] / ref["rps"]
            off = "log off" in label
            self.add(f"7 catalog {label}, 16 clients: req/s vs the raw server (plain WSGI, same bytes)",
                     f"{ours['rps']:.0f}/s", f"plain WSGI {ref['rps']:.0f}/s", ratio, "≥ 0.95 × plain WSGI",
                     check(ratio, 0.95, True), key="" if off else f"raw {label}")
            self.add(f"7 catalog {label}: server CPU per request vs the raw server", f"{ours['cpu_ms'] * 1000:.0f} µs",
                     f"plain WSGI {ref['cpu_ms'] * 1000:.0f} µs", ours["cpu_ms"] / ref["cpu_ms"])
        # Issue 14: gzip answers (Accept-Encoding: gzip) beside uncompressed ones, from the same rounds.
        packed, plain_answer = got["DSM 7 GET gzip, N=1000"][0], got["DSM 7 GET, N=1000"][0]
        self.add("gzip catalog DSM 7 GET, N=1000, 16 clients: req/s", f"{packed['rps']:.0f}/s",
                 f"uncompressed {plain_answer['rps']:.0f}/s", packed["rps"] / plain_answer["rps"])
        self.add("gzip catalog DSM 7 GET, N=1000: bytes per answer", f"{sizes_of['DSM 7 GET gzip, N=1000']:,} B",
                 f"uncompressed {sizes_of['DSM 7 GET, N=1000']:,} B",
                 sizes_of["DSM 7 GET gzip, N=1000"] / sizes_of["DSM 7 GET, N=1000"])
        self.ours.update({f"rps {n}": got[f"DSM 7 GET, N={n}"][0]["rps"] for n in (100, 1000)})
        for kind in ("DSM 7 GET", "DSM 6 POST"):
            small, large = got[f"{kind}, N=100"][0]["rps"], got[f"{kind}, N=1000"][0]["rps"]
            self.add(f"1 {kind}: N=1000 vs N=100", f"{large:.0f}/s", f"N=100 {small:.0f}/s", large / small,
                     "≥ 0.5", check(large / small, 0.5, True), key="scaling")
        if "catalog DSM 7 GET, N=1000" in self.misses or self.args.profile == "always":
            self.profile_load("catalog DSM 7 GET, N=1000, 16 clients", s1000,
                              {"paths": [DSM7], "conns": 16})
        return floors

    # -- issue 14: the cost of counting -------------------------------------------------------------------

    def counting_cost(self, folder: Path) -> None:
        """Catalog throughput with counting on (server.metrics, the default: /metrics, /v1/stats) against a
        server with it off, N=1000: counting may cost at most 3 %. Short runs in many rounds, the two servers
        back to back in alternating order; the figure is the median of the rounds' ratios (a ratio of runs a
        few seconds apart: other work on the machine weighs on both)."""
        on = self.spklite("counting-on", folder, self.work / "home-counting-on").start()
        off = self.spklite("counting-off", folder, self.work / "home-counting-off", "--no-server-metrics").start()
        for proc in (on, off):
            proc.wait_answer(DSM7)
            proc.settle()
        rounds, seconds = 2 * self.args.runs + 3, 2
        self.say(f"catalog throughput with counting on and off: {rounds} rounds")
        for label, paths in (("DSM 7 GET", [DSM7]), ("16 NAS profiles round-robin", PROFILES)):
            request = {"paths": paths, "conns": 16}
            for proc in (on, off):  # warm up: memo, caches, connections
                load(proc.port, seconds=1, **request)
            runs: Dict[Process, List[Dict[str, float]]] = {on: [], off: []}
            for r in range(rounds):
                for proc in (on, off) if r % 2 == 0 else (off, on):
                    runs[proc].append(self.measured(proc, seconds, request))
            ratios = [a["rps"] / b["rps"] for a, b in zip(runs[on], runs[off])]
            ratio = statistics.median(ratios)
            ours, ref = median_of(runs[on]), median_of(runs[off])
            judged = label == "DSM 7 GET"
            self.add(f"N1 catalog {label}, N=1000, 16 clients, counting on: req/s (ratio: median of {rounds} "
                     "rounds)", f"{ours['rps']:.0f}/s", f"counting off {ref['rps']:.0f}/s", ratio,
                     "≥ 0.97 × off" if judged else "—", check(ratio, 0.97, True) if judged else None,
                     key="counting" if judged else "")
            self.add(f"N1 catalog {label}, counting on: server CPU per request", f"{ours['cpu_ms'] * 1000:.0f} µs",
                     f"counting off {ref['cpu_ms'] * 1000:.0f} µs", ours["cpu_ms"] / ref["cpu_ms"])
            self.notes.append(f"N1 {label}: per-round ratios on/off " + ", ".join(f"{x:.2f}" for x in ratios))
        status, body = fetch(on.port, "/metrics")
        counted = re.search(rb'^spklite_requests_total\{route="/",status="200"\} (\d+)$', body, re.M)
        self.notes.append(f"counting on: /metrics answered {status}, {int(counted.group(1)) if counted else 0} "
                          "catalog answers counted")
        on.stop()
        off.stop()

    def app_cost(self, home: Path, folder: Path) -> None:
        """The Python cost of one catalog request in-process (no network, no threads) vs the floor route."""
        self.say("in-process cost of a catalog request")
        with open(self.log_dir / "wsgi-cost.log", "wb") as log:
            out = subprocess.run([sys.executable, str(HERE / "wsgi_cost.py"), str(home), str(folder), "3000"],
                                 stdout=subprocess.PIPE, stderr=log, text=True, env=self.env)
        if out.returncode:
            self.notes.append(f"in-process cost not measured: wsgi_cost.py failed, see {log.name}")
            return
        data = json.loads(out.stdout)
        for method, kind in (("GET", "DSM 7 GET"), ("POST", "DSM 6 POST")):
            got = data[method]
            self.add(f"1 {kind}, N=1000: Python time of one request in-process (WSGI call, no network)",
                     f"{got['spklite_us']:.0f} µs", f"floor route {got['floor_us']:.0f} µs",
                     got["spklite_us"] / got["floor_us"])
            self.add(f"7 {kind}, N=1000: the same without the access log, vs a plain WSGI function",
                     f"{got['no_log_us']:.1f} µs", f"plain WSGI {got['plain_us']:.1f} µs",
                     got["no_log_us"] / got["plain_us"])
        if any(m.startswith("catalog") for m in self.misses) or self.args.profile == "always":
            lines = ["\n#### profile: one DSM 7 GET catalog request in-process, N=1000 (cProfile, 3,000 calls)\n",
                     "cProfile inflates functions that are called often; the shares still rank the costs.\n",
                     "| function | calls/request | own µs | cumulative µs | share |", "|---|---:|---:|---:|---:|"]
            lines += [f"| `{name}` | {n:.0f} | {own:.1f} | {cum:.1f} | {share:.0%} |"
                      for name, n, own, cum, share in data["profile"]]
            self.profiles.append("\n".join(lines) + "\n")

    def profile_load(self, title: str, proc: Process, request: Dict[str, Any]) -> None:
        if not spy.py_spy():
            self.notes.append(f"{title}: no py-spy to profile with")
            return
        seconds = self.args.seconds + 1
        out = self.log_dir / f"profile-{len(self.profiles)}.txt"
        worker = threading.Thread(target=load, args=(proc.port,), kwargs=dict(request, seconds=seconds + 2))
        worker.start()
        time.sleep(0.5)
        spy.record_pid(proc.pid, seconds, out).wait()
        worker.join()
        rate = 250 * seconds
        self.profiles.append(spy.markdown(
            f"profile: {title}", out, f" holding the GIL (of {rate} taken: the GIL was busy "
            "that share of the time; shares below are of GIL-holding samples)"))

    # -- issue 3: large files beside the catalog; issue 4: downloads -----------------------------------

    def large_files(self, s1000: Process, folder: Path, staged: List[Path]) -> Path:
        """Catalog latency with and without five 100 MB SPKs, in alternating rounds (moved in and out)."""
        latency = {"paths": [DSM7], "conns": 1}
        target = folder / "large"
        target.mkdir()
        without, with_large, took = [], [], []
        packages = s1000.health()["packages"]
        for r in range(self.args.runs):
            self.say(f"catalog latency without and with the large SPKs, round {r + 1}/{self.args.runs}")
            without.append(self.measured(s1000, self.args.seconds, latency))
            t0 = time.perf_counter()
            for path in staged:
                os.rename(path, target / path.name)
            s1000.settle(packages + len(staged))
            took.append(time.perf_counter() - t0)
            with_large.append(self.measured(s1000, self.args.seconds, latency))
            if r < self.args.runs - 1:
                for path in staged:
                    os.rename(target / path.name, path)
                s1000.settle(packages)
        before, after = median_of(without), median_of(with_large)
        self.notes.append(f"five 100 MiB SPKs moved in: indexed and hashed in {statistics.median(took):.1f} s")
        ratio = after["p50"] / before["p50"]
        self.add("S5 catalog latency, 1 client, with 5 × 100 MB SPKs: p50", f"{after['p50']:.2f} ms",
                 f"without {before['p50']:.2f} ms", ratio, "no measurable change (≤ 1.1×)",
                 ratio <= 1.1, key="large")
        self.add("S5 catalog latency, 1 client, with 5 × 100 MB SPKs: p99", f"{after['p99']:.2f} ms",
                 f"without {before['p99']:.2f} ms", after["p99"] / before["p99"])
        self.add("S5 server CPU per catalog request, with 5 × 100 MB SPKs", f"{after['cpu_ms'] * 1000:.0f} µs",
                 f"without {before['cpu_ms'] * 1000:.0f} µs", after["cpu_ms"] / before["cpu_ms"])
        return target / staged[0].name

    def downloads(self, s1000: Process, large: Path, tiny: Path) -> None:
        url = "/download/large/" + large.name
        status, body = fetch(s1000.port, url)
        if status != 200 or len(body) != large.stat().st_size:
            raise RuntimeError(f"download: {status}, {len(body)} bytes")
        del body
        bare = self.floor(len(fetch(s1000.port, DSM7)[1]), large)
        for conns in (1, 8):
            self.say(f"download, {conns} client(s)")
            ours, ref = self.pairs(f"download x{conns}", s1000, bare, paths=[url], conns=conns,
                                   threads=1 if conns == 1 else 2)
            ratio = ours["mbps"] / ref["mbps"]
            self.add(f"3 download 100 MB, {conns} client{'s' if conns > 1 else ''}", f"{ours['mbps']:.0f} MB/s",
                     f"bare waitress {ref['mbps']:.0f} MB/s", ratio, "≥ 0.9 × bare", check(ratio, 0.9, True),
                     key=f"download x{conns}")
        probe = {"paths": [DSM7], "conns": 1, "delay_ms": 10}
        idle = self.runs(s1000.port, **probe)
        self.say("catalog during 8 downloads")
        self.add("3 catalog p99, no downloads (paced client, 100 req/s)", f"{idle['p99']:.1f} ms")
        for link in ("loopback", "gigabit"):
            busy, ref = (self.during_downloads(proc.port, url, probe, link) for proc in (s1000, bare))
            what = ("as fast as loopback takes them" if link == "loopback"
                    else "each read at 12.5 MB/s (1 Gbit/s in all)")
            self.add(f"3 catalog p99 during 8 downloads, {what}", f"{busy['p99']:.1f} ms",
                     f"floor, same load {ref['p99']:.1f} ms", busy["p99"] / ref["p99"], "≤ 50 ms",
                     busy["p99"] <= 50, key=f"catalog during downloads ({link})")
        if {"download x8", "catalog during downloads (loopback)"} & set(self.misses) or self.args.profile == "always":
            self.profile_load("8 downloads of 100 MB", s1000, {"paths": [url], "conns": 8, "threads": 2})

        size = large.stat().st_size
        header = f"Range: bytes={size - MB}-{size - 1}"
        status, body = fetch(s1000.port, url, headers=dict([header.split(": ")]))
        if status != 206 or len(body) != MB:
            raise RuntimeError(f"range: {status}, {len(body)} bytes")
        self.say("range downloads")
        ours, ref = self.pairs("range", s1000, self.floor(0, tiny), paths=[url], conns=1, header=header)
        self.add("4 range request, last 1 MB of 100 MB: p50 latency", f"{ours['p50']:.2f} ms",
                 f"bare waitress, whole 1 MB file {ref['p50']:.2f} ms", ours["p50"] / ref["p50"])
        threads = self.settings["threads"]
        request = drive.request_bytes(url, header=header)
        with drive.Readers(s1000.port, request, 8, rate=200_000, chunk=4096, rcvbuf=4096) as slow:
            time.sleep(0.5)
            busy = load(s1000.port, seconds=self.args.seconds, **probe)
            received = max(slow.received) / 1024
            finished = sum(slow.done)
        self.add(f"4 catalog p99 during 8 slow range downloads ({threads} worker threads)", f"{busy['p99']:.1f} ms",
                 f"idle {idle['p99']:.1f} ms", busy["p99"] / idle["p99"], "≤ 50 ms (no thread held)",
                 busy["p99"] <= 50 and busy["errors"] == 0, key="slow range")
        self.notes.append(f"slow range downloads: when the probe ended, {finished}/8 had finished and the "
                          f"furthest had {received:.0f} of 1024 KiB")

    def during_downloads(self, port: int, url: str, probe: Dict[str, Any], link: str) -> Dict[str, float]:
        """Catalog latency while 8 clients download the large file, as fast as they can (wrk) or each
        at an eighth of a gigabit link."""
        seconds = self.args.seconds
        if link == "gigabit":
            with drive.Readers(port, drive.request_bytes(url), 8, rate=12.5e6):
                time.sleep(0.7)
                return load(port, seconds=seconds, **probe)
        worker = threading.Thread(target=load, args=(port,), kwargs=dict(paths=[url], conns=8, threads=2,
                                                                          seconds=seconds + 2))
        worker.start()
        time.sleep(0.7)
        try:
            return load(port, seconds=seconds, **probe)
        finally:
            worker.join()

    # -- issue 4: clients that vanish; issue 3: visibility ----------------------------------------------

    def disconnects(self, s1000: Process, large: Path) -> None:
        before = fetch(s1000.port, DSM7)[1]
        log_start = s1000.log.stat().st_size
        url = "/download/large/" + large.name
        size = large.stat().st_size
        kinds = ((drive.request_bytes(url), 4 * MB),
                 (drive.request_bytes(url, header=f"Range: bytes={size - MB}-{size - 1}"), 64 * 1024),
                 (drive.request_bytes(DSM7), 4096),
                 (drive.request_bytes("/", "POST", DSM6_BODY), 2048))
        for request, after in kinds:
            for _ in range(20):
                drive.abort_midway(s1000.port, request, after)
        time.sleep(0.5)
        alive = s1000.alive()
        health = s1000.health() if alive else {}
        t0 = time.perf_counter()
        status, after_body = fetch(s1000.port, DSM7) if alive else (0, b"")
        took = time.perf_counter() - t0
        with open(s1000.log, "rb") as fh:
            fh.seek(log_start)
            tracebacks = fh.read().count(b"Traceback")
        ok = alive and health.get("status") == "ok" and status == 200 and after_body == before and not tracebacks
        self.add("6 80 clients reset mid-transfer (download, range, catalog GET/POST; 20 each)",
                 f"{'alive' if alive else 'DEAD'}, /health {health.get('status', '-')}, catalog "
                 f"{'unchanged' if after_body == before else 'CHANGED'} in {ms(took)}, {tracebacks} tracebacks",
                 "Go server exits", None, "server undisturbed", ok, key="disconnect")

    def visibility(self, s1000: Process, folder: Path, staged: List[Path]) -> None:
        delays = visibility_delays(s1000, folder, staged)
        median, p95 = statistics.median(delays), drive.percentile(delays, 95)
        mode = s1000.health()["watch"]
        self.add(f"S6 visibility, `mv` into the folder -> in the catalog ({len(delays)} trials, {mode}): median",
                 ms(median), "gosspks 300 s (TTL)")
        self.add("S6 visibility: p95", ms(p95), "gosspks 300 s (TTL)", p95 / 300, "≤ 300 ms", p95 <= 0.3,
                 key="visibility")

    # -- issue 12: memory bounded at all times --------------------------------------------------------------

    def memory_bound(self, source: Path, specs: List[corpus.Spec]) -> Tuple[float, float, List[str]]:
        """N=1,000 and one 100 MB SPK: start, catalog load (16 clients, 16 NAS), eight parallel 100 MB downloads,
        then requests with distinct random NAS profiles (platform x build x language x channel). RSS is sampled
        every 50 ms throughout; the peak, the end value (idle 6 s later) and each phase's end."""
        name = "memory"
        folder = corpus.link_prefix(source, specs, 1000, self.work / f"p-{name}")
        large = corpus.build_large(folder / "bench-memory-large.spk", "bench-memory-large", LARGE_SIZE)
        paths = self.work / f"{name}-profiles.txt"
        paths.write_text("\n".join(random_profiles(self.args.profiles)) + "\n")
        proc = self.spklite(name, folder, self.work / f"home-{name}").start()
        proc.wait_answer(DSM7)
        proc.settle()
        time.sleep(0.3)
        steps = [f"start {proc.rss_mb():.1f}"]
        with RssPeak(proc) as rss:
            load(proc.port, conns=16, seconds=self.args.memory_seconds, paths=PROFILES)
            steps.append(rss.lap(f"{self.args.memory_seconds} s of catalog load"))
            request = drive.request_bytes("/download/" + large.name)
            with drive.Readers(proc.port, request, 8, rate=1e12) as readers:
                # the bytes, not the end of the connection: a keep-alive one stays open till waitress' timeout
                deadline = time.monotonic() + 120
                while min(readers.received) < large.stat().st_size and time.monotonic() < deadline:
                    time.sleep(0.1)
            if sum(readers.received) < 8 * large.stat().st_size:
                self.notes.append(f"{name}: the downloads got {sum(readers.received)} bytes, not 8 × 100 MB")
            steps.append(rss.lap("8 downloads"))
            done = load(proc.port, conns=4, seconds=600, paths_file=str(paths))
            if done["requests"] < self.args.profiles or done["errors"]:
                self.notes.append(f"{name}: {done['requests']:.0f} of {self.args.profiles} profiles asked, "
                                  f"{done['errors']:.0f} errors")
            steps.append(rss.lap(f"{done['requests']:.0f} distinct profiles"))
            time.sleep(6)  # one round of the server's upkeep (5 s), which trims the heap
            end = proc.rss_mb()
        proc.stop()
        return rss.peak, end, steps

    # -- issue 12: the cost of a large folder ------------------------------------------------------------

    def scaling(self, sizes: Sequence[int]) -> None:
        """N tiny SPKs (a corpus cached across runs, hard-linked here): cold and warm start beside the empty
        folder's in the same rounds, `spklite scan`, RSS, snapshot size, one client's catalog latency on a memo
        miss and on a hit, visibility of a new file."""
        self.say(f"the tiny corpus of {max(sizes)} SPKs (kept in {corpus.CACHE})")
        source = corpus.tiny_corpus(max(sizes))
        empty, stage = self.work / "scaling-empty", self.work / "scaling-stage"
        empty.mkdir()
        stage.mkdir()
        for n in sizes:
            folder = corpus.link_tree(source, self.work / f"tiny-{n}", n)
            home = self.work / f"home-tiny-{n}"
            self.say(f"N={n}: cold start, scan, {self.args.runs} warm starts")
            t_cold = self.start_once(f"tiny-cold-{n}", folder, home, settle=True)[0]
            t0 = time.perf_counter()
            subprocess.run([self.program, "scan", "--home", str(home), "--packages", str(folder)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
            t_scan = time.perf_counter() - t0
            bare, warm, rss = [], [], []
            for _ in range(self.args.runs):
                bare.append(self.start_once("tiny-empty", empty, self.work / "home-tiny-empty", False)[0])
                seconds, _, mib = self.start_once(f"tiny-warm-{n}", folder, home, settle=True)
                warm.append(seconds)
                rss.append(mib)
            t_empty, t_warm, mib = statistics.median(bare), statistics.median(warm), statistics.median(rss)
            snapshot = (home / "cache" / "index.jsonl").stat().st_size
            judged = n == 50000
            self.add(f"12.3 cold start (no snapshot), N={n:,}", ms(t_cold), f"empty {ms(t_empty)}", t_cold / t_empty)
            self.add(f"12.3 warm start (snapshot), N={n:,}", ms(t_warm), f"empty {ms(t_empty)}", t_warm / t_empty,
                     "≤ 2× empty" if judged else "—", t_warm <= 2 * t_empty if judged else None, key=f"warm {n}")
            self.add(f"12.3 `spklite scan` (snapshot up to date), N={n:,}", ms(t_scan))
            limit = 25 + 0.5 * n / 1024
            self.add(f"12.3 RSS after a warm start, N={n:,}", f"{mib:.1f} MiB",
                     f"{(mib - 25) * 1024 / n:.2f} KiB/file over 25 MiB", None,
                     f"≤ {limit:.1f} MiB (25 + 0.5 KiB/file)", mib <= limit, key=f"rss {n}")
            self.add(f"12.3 snapshot size, N={n:,}", f"{snapshot / MB:.1f} MiB", f"{snapshot / n:.0f} B/file")

            proc = self.spklite(f"tiny-{n}", folder, home).start()
            proc.wait_answer(DSM7)
            proc.settle()
            miss, hit, size = miss_and_hit(proc.port, distinct_profiles(60))
            self.add(f"12.3 catalog, 1 client, memo miss, N={n:,}: p50 (answers ~{size // 1024} KiB)",
                     f"{statistics.median(miss):.1f} ms", f"hit {statistics.median(hit):.2f} ms")
            p95 = drive.percentile(miss, 95)
            self.add(f"12.3 catalog, 1 client, memo miss, N={n:,}: p95", f"{p95:.1f} ms",
                     f"hit {drive.percentile(hit, 95):.2f} ms", None, "≤ 50 ms" if judged else "—",
                     p95 <= 50 if judged else None, key=f"miss {n}")
            staged = [corpus.spkbuilder.build_spk(stage / f"bench-new-{n}-{i:02d}.spk", {
                "package": f"bench-new-{n}-{i:02d}", "version": "1.0-1", "arch": "noarch",
                "os_min_ver": "7.0-40000"}) for i in range(self.args.scaling_trials)]
            delays = visibility_delays(proc, folder, staged)
            p95 = drive.percentile(delays, 95)
            self.add(f"12.3 visibility of a new file, N={n:,} ({len(delays)} trials, {proc.health()['watch']}): p95",
                     ms(p95), f"median {ms(statistics.median(delays))}", None, "≤ 300 ms" if judged else "—",
                     p95 <= 0.3 if judged else None, key=f"visibility {n}")
            proc.stop()

    def beside_gosspks(self) -> None:
        """This run's figures beside gosspks' recorded ones (GOSSPKS: same machine, another run)."""
        for key, label, unit, index in (("rps", "catalog DSM 7 GET, 16 clients", "/s", 0),
                                        ("warm", "warm start to the first answer", "ms", 1),
                                        ("rss", "RSS after start", "MiB", 2)):
            for n, figures in GOSSPKS.items():
                if f"{key} {n}" not in self.ours:
                    continue
                ours, theirs = self.ours[f"{key} {n}"], figures[index]
                shown = [f"{v * 1000:.0f} ms" if unit == "ms" else f"{v:.1f} MiB" if unit == "MiB" else f"{v:.0f}/s"
                         for v in (ours, theirs)]
                self.add(f"8 {label}, N={n}, beside gosspks", shown[0],
                         f"gosspks {shown[1]} (bench/gosspks.md, {GOSSPKS_MEASURED})", ours / theirs)

    # -- profiles of start-up ----------------------------------------------------------------------------

    def profile_start(self, folder: Path, home: Path, kind: str) -> None:
        """Profile a cold (no snapshot) or warm (snapshot) start, from exec to the first answer."""
        if not spy.py_spy():
            return
        shutil.rmtree(home / "cache", ignore_errors=True)
        if kind == "warm":
            self.start_once("before-profile", folder, home, settle=True)  # leaves a complete snapshot
        port = drive.free_port()
        out = self.log_dir / f"profile-{len(self.profiles)}.txt"
        argv = [self.program, "--home", str(home), "--packages", str(folder), "--port", str(port),
                "--host", "127.0.0.1"]
        recorder = spy.record_command(argv, out, self.log_dir / "profile-start.log", self.env)
        proc = Process("profiled", argv, self.log_dir / "profile-start.log", port)
        proc.proc, proc.started = recorder, time.perf_counter()
        try:
            seconds, _ = proc.wait_answer(DSM7)
        finally:
            children = Path(f"/proc/{recorder.pid}/task/{recorder.pid}/children").read_text().split()
            for child in children:  # the server py-spy started: killing it ends the recording
                os.kill(int(child), signal.SIGKILL)  # at once: its shutdown is no part of a start-up
            recorder.wait(30)
        self.profiles.append(spy.markdown(
            f"profile: {kind} start, N=1000", out, " of busy threads, wall clock, from exec to the first answer "
            f"({ms(seconds)} under the profiler)", busy_only=True))

    def memory_notes(self) -> None:
        """What the imports alone cost, module by module, in a fresh interpreter."""
        modules = ("bottle", "waitress", "yaml", "inotify_simple", "tarfile", "spklite.spk", "spklite.config",
                   "spklite.index", "spklite.catalog", "spklite.app", "spklite.server", "spklite.cli")
        code = ("import importlib, sys\n"
                "def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
                "print('interpreter', rss())\n"
                "for m in sys.argv[1:]:\n"
                "    importlib.import_module(m); print(m, rss())\n")
        out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, env=self.env)
        steps, last = [], 0
        for line in out.stdout.splitlines():
            name, kib = line.split()
            steps.append(f"{name} {int(kib) / 1024:.1f}" if not last else f"+{name} +{(int(kib) - last) / 1024:.1f}")
            last = int(kib)
        self.notes.append("RSS of the imports alone (MiB, in import order): " + ", ".join(steps))

    def import_notes(self) -> None:
        """Where the import time of a start-up goes (python -X importtime)."""
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import spklite.cli, spklite.server"],
                             capture_output=True, text=True, env=self.env)
        own, cumulative = {}, {}
        for line in out.stderr.splitlines():
            parts = line.split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            name = parts[2].strip()
            own[name], cumulative[name] = int(parts[0].split(":")[1]) / 1000, int(parts[1]) / 1000
        if not own:
            return
        top = sorted(own.items(), key=lambda kv: -kv[1])[:8]
        packages = [n for n in ("bottle", "waitress", "yaml", "inotify_simple", "tarfile", "logging", "argparse",
                                "json", "spklite.config", "spklite.app", "spklite.spk") if n in cumulative]
        self.notes.append(
            f"import time of spklite.cli + spklite.server: {sum(own.values()):.0f} ms; largest own times: "
            + ", ".join(f"{n} {t:.1f} ms" for n, t in top) + "; with what they import: "
            + ", ".join(f"{n} {cumulative[n]:.1f} ms" for n in packages))

    # -- the table -----------------------------------------------------------------------------------------

    def table(self, seconds: float) -> str:
        lines = ["| figure | spklite | reference | ratio | target | |", "|---|---:|---|---:|---|---|"]
        for row in self.rows:
            mark = {True: "ok", False: "**MISS**", None: ""}[row.ok]
            lines.append(f"| {row.figure} | {row.value} | {row.reference} | {row.ratio} | {row.target} | {mark} |")
        from spklite import __version__

        head = (f"## spklite {__version__} benchmark — Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                f"{self.args.runs} runs × {self.args.seconds} s per figure (medians), load by "
                f"{'wrk' if drive.have_wrk() else 'a Python client (no wrk)'}, total {seconds:.0f} s; "
                f"load average before {self.load_before}, after {os.getloadavg()[0]:.1f}\n\n"
                "Figures S1–S6: issue 3 (the live index); 1–6: issue 4's figures; 7: issue 12.4 (against the raw "
                "server: a plain WSGI function answering the same bytes); 8: issue 12.5 (beside gosspks). "
                "Ratio = spklite / reference.\n")
        notes = "".join(f"- {n}\n" for n in self.notes)
        return head + "\n" + "\n".join(lines) + "\n\n" + notes + "".join(self.profiles)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


class RssPeak:
    """The highest RSS (MiB) of a process, sampled every 50 ms in a thread while the block runs."""

    def __init__(self, proc: Process):
        self.proc, self.peak, self.lap_peak = proc, proc.rss_mb(), 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.lap_peak = max(self.lap_peak, self.proc.rss_mb())
            self.peak = max(self.peak, self.lap_peak)

    def lap(self, what: str) -> str:
        """What happened, the RSS now and its peak since the last lap."""
        now, peak, self.lap_peak = self.proc.rss_mb(), self.lap_peak, 0.0
        return f"{what} {now:.1f} (peak {max(peak, now):.1f})"


def pyenv_python(version: str) -> Optional[str]:
    """A pyenv Python of this minor version (e.g. "3.9"), the newest patch release."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(pyenv.glob(f"versions/{version}.*/bin/python3"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)])
    return str(found[-1]) if found else None


def random_profiles(count: int, seed: int = 2) -> List[str]:
    """`count` distinct catalog requests with random NAS profiles: any platform Synology names (and a few it
    does not), any DSM build, any DSM language, either channel."""
    from spklite import synology

    rng = random.Random(seed)
    platforms = sorted({*synology.PLATFORM_FAMILY, *synology.PLATFORMS_WITHOUT_FAMILY, "unknown1", "unknown2"})
    found: Dict[str, None] = {}
    while len(found) < count:
        platform, build = rng.choice(platforms), rng.randint(1000, 90000)
        found[f"/?arch={platform}&build={build}&language={rng.choice(synology.LANGUAGES)}"
              f"&unique=synology_{platform}_{rng.choice(('ds218', '918%2B', 'rs819', 'ds1522%2B'))}"
              f"&package_update_channel={rng.choice(('stable', 'beta'))}"] = None
    return list(found)


def visibility_delays(proc: Process, folder: Path, staged: List[Path]) -> List[float]:
    """Seconds from each file's `mv` into the folder to its first appearance in the DSM 7 catalog."""
    delays = []
    for path in staged:
        needle = b'"package":"%s"' % path.stem.encode()
        t0 = time.perf_counter()
        os.rename(path, folder / path.name)
        while time.perf_counter() - t0 < 5:
            if needle in fetch(proc.port, DSM7)[1]:
                break
            time.sleep(0.005)
        delays.append(time.perf_counter() - t0)
        time.sleep(0.25)
    return delays


def distinct_profiles(count: int, seed: int = 12) -> List[str]:
    """`count` catalog requests that each have an answer (a memo entry) of their own: platform x DSM build x
    language x channel."""
    platforms = ("apollolake", "geminilake", "denverton", "armada38x", "rtd1296", "alpine", "evansport", "88f6281")
    builds = ((15284, 6, 1), (25556, 6, 2), (42661, 7, 1))  # one in each range the tiny corpus's minimums make
    combos = [(p, b, lang, beta) for p in platforms for b in builds for lang in ("enu", "fre", "ger")
              for beta in (False, True)]
    random.Random(seed).shuffle(combos)
    return [f"/?arch={p}&build={b}&major={major}&minor={minor}&language={lang}&unique=synology_{p}_x"
            f"&package_update_channel={'beta' if beta else 'stable'}"
            for p, (b, major, minor), lang, beta in combos[:count]]


def miss_and_hit(port: int, paths: Sequence[str]) -> Tuple[List[float], List[float], int]:
    """Each path asked twice in a row on one keep-alive connection: its latency (ms) on a memo miss, on the
    hit that follows, and the answers' mean size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: Tuple[List[float], List[float]] = ([], [])
    size = 0
    try:
        for path in paths:
            for kind in times:
                t0 = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                kind.append((time.perf_counter() - t0) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
            size += len(body)
    finally:
        conn.close()
    return times[0], times[1], size // max(1, len(paths))


def build_corpora(bench: Bench, trials: int
                  ) -> Tuple[Dict[str, Path], List[corpus.Spec], List[Path], List[Path], Path]:
    work = bench.work
    specs = corpus.small_specs(2000)
    bench.say("building 2,000 small SPKs")
    corpus.build_corpus(work / "p2000", specs)
    folders = {"2000": work / "p2000", "empty": work / "empty"}
    folders["empty"].mkdir()
    for n in (100, 1000):
        folders[str(n)] = corpus.link_prefix(work / "p2000", specs, n, work / f"p{n}")
    folders["profile"] = corpus.link_prefix(work / "p2000", specs, 1000, work / "p-profile")
    stage = work / "stage"
    stage.mkdir()
    large = [corpus.build_large(stage / f"bench-large-{i}.spk", f"bench-large-{i}", LARGE_SIZE)
             for i in range(1, 6)]
    new = []
    for i in range(trials):
        info = {"package": f"bench-new-{i:03d}", "version": "1.0-1", "arch": "noarch",
                "os_min_ver": "7.0-40000"}
        new.append(corpus.spkbuilder.build_spk(stage / f"bench-new-{i:03d}.spk", info))
    tiny = work / "one-mb.bin"
    with open(tiny, "wb") as fh:
        fh.truncate(MB)
    return folders, specs, large, new, tiny


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repeated runs per figure (median)")
    parser.add_argument("--seconds", type=int, default=3, help="length of one load run")
    parser.add_argument("--trials", type=int, default=40, help="visibility trials (at least 30)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile figures that miss their target (auto), all of them, or none")
    parser.add_argument("--sizes", default="10000,50000",
                        help="folder sizes of issue 12's scaling figures (tiny SPKs, comma-separated; '' skips)")
    parser.add_argument("--scaling-trials", type=int, default=20, help="visibility trials per scaling size")
    parser.add_argument("--memory-seconds", type=int, default=60, help="catalog load of the memory scenario")
    parser.add_argument("--profiles", type=int, default=50000,
                        help="distinct random NAS profiles of the memory scenario (0 skips the scenario)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="spklite-bench-"))
    bench = Bench(args, work)
    try:
        folders, specs, large, new, tiny = build_corpora(bench, args.trials)
        bench.startups(folders)
        bench.pyz_startups(folders["100"])
        s1000 = bench.spklite("server-1000", folders["1000"], work / "home-1000").start()
        s100 = bench.spklite("server-100", folders["100"], work / "home-100").start()
        quiet = bench.spklite("server-1000-quiet", folders["1000"], work / "home-1000-quiet", "--log-level",
                              "warning").start()  # access lines are at info
        for proc in (s1000, s100, quiet):
            proc.wait_answer(DSM7)
            proc.settle()
        time.sleep(0.3)
        floors = bench.throughput(s100, s1000, quiet)
        quiet.stop()
        rss_load = s1000.rss_mb()
        bench.app_cost(work / "home-1000", folders["1000"])
        queue_warnings = s1000.log.read_bytes().count(b"Task queue depth")
        if queue_warnings:
            bench.notes.append(f"the N=1000 server logged {queue_warnings} waitress 'Task queue depth' warnings "
                               "during the throughput runs (16 clients, 4 threads)")
        s100.stop()
        bench.counting_cost(folders["1000"])
        floor_rss = floors[min(floors)].rss_mb()
        bench.add("5 RSS after the throughput runs, N=1000", f"{rss_load:.1f} MiB",
                  f"the floor (Bottle + waitress) {floor_rss:.1f} MiB", rss_load / floor_rss, "≤ 35 MB",
                  rss_load <= 35, key="rss load")
        big = bench.large_files(s1000, folders["1000"], large)
        bench.downloads(s1000, big, tiny)
        bench.disconnects(s1000, big)
        bench.visibility(s1000, folders["1000"], new)
        bench.add("5 RSS at the end (after downloads, 1,040 files)", f"{s1000.rss_mb():.1f} MiB")
        s1000.stop()
        if args.profiles:
            bench.say("memory: catalog load, 8 downloads, distinct NAS profiles")
            peak, end, steps = bench.memory_bound(folders["2000"], specs)
            what = (f"start + {args.memory_seconds} s catalog load + 8 × 100 MB downloads + {args.profiles:,} "
                    "distinct random NAS profiles, N=1,000")
            bench.add(f"12.2 RSS peak: {what}", f"{peak:.1f} MiB", f"end {end:.1f} MiB", None, "≤ 35 MiB",
                      peak <= 35, key="memory bound")
            bench.notes.append("12.2 memory scenario, RSS in MiB after each step (peak within it): " + ", ".join(steps))
        sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
        if sizes:
            bench.scaling(sizes)
        bench.beside_gosspks()
        if args.profile != "never":
            if "rss" in bench.misses or "rss load" in bench.misses or args.profile == "always":
                bench.memory_notes()
            if "cold" in bench.misses or args.profile == "always":
                bench.say("profiling a cold start")
                bench.profile_start(folders["profile"], work / "home-profile", "cold")
            if "warm" in bench.misses or args.profile == "always":
                bench.import_notes()
                bench.say("profiling a warm start")
                bench.profile_start(folders["profile"], work / "home-profile", "warm")
    finally:
        bench.stop_all()
        if args.keep:
            bench.say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = bench.table(time.monotonic() - started)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
