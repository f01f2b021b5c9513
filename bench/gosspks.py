"""spklite beside gosspks, measured alike on this machine (issue 12.5); its output is bench/gosspks.md.

    gosspks.py GOSSPKS_BINARY [--spklite PROGRAM] [--sizes 100,1000,10000] [--runs 3] [--seconds 3]
               [--corpus DIR] [--out FILE]

gosspks is not part of spklite and is not in this repository: build it yourself (bench/gosspks.md says how it
was built for the recorded figures). For each folder size N (the bench's own corpus of real small SPKs, kept
in --corpus to be reused), both servers run on a loopback port with a fresh home:
- start-up: seconds from exec to the first 200 catalog answer (DSM 7 GET), with an empty cache ("cold") and
  again with the cache the first start left ("warm": spklite's snapshot, gosspks' extracted INFO files);
- RSS after start (the warm start, once answered) and during the load runs (sampled mid-run, the largest);
- catalog req/s: 16 keep-alive clients (wrk), DSM 7 GET, runs interleaved between the two servers, medians.
gosspks exits (log.Fatal) when a client closes its connection before the answer is written, which wrk does
at the end of every run: a server found dead before a run is started again (warm) and the restarts counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import corpus
import drive
from drive import Process, fetch, load, median_of
from run import DSM7


def folder(root: Path, n: int) -> Path:
    """The first n files of the bench's corpus, built once into `root`."""
    path = root / f"p{n}"
    if not path.is_dir():
        specs = corpus.small_specs(n)
        corpus.build_corpus(root / f"p{n}.tmp", specs)
        (root / f"p{n}.tmp").rename(path)
    return path


def argv_for(kind: str, program: List[str], packages: Path, home: Path, port: int) -> List[str]:
    if kind == "spklite":
        return [*program, "--home", str(home), "--packages", str(packages), "--port", str(port), "--host", "127.0.0.1"]
    return [*program, "--home", str(home), "--packages", str(packages), "--cache", str(home / "cache"),
            "--port", str(port)]


STARTED: List[Process] = []  # stopped at the end, whatever happens


def start(kind: str, program: List[str], packages: Path, home: Path, logs: Path) -> Process:
    port = drive.free_port()
    proc = Process(f"{kind}-{port}", argv_for(kind, program, packages, home, port), logs / f"{kind}-{port}.log", port)
    STARTED.append(proc)
    return proc.start()


def first_answer(proc: Process, timeout: float = 600) -> Tuple[float, bytes]:
    """Seconds from exec to the first 200 catalog answer. One request is waited for as long as it takes: gosspks
    parses the folder on its first request, and exits if that client gives up before the answer is written."""
    deadline = proc.started + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; see {proc.log}")
        try:
            status, body = fetch(proc.port, DSM7, timeout=timeout)
            if status == 200:
                return time.perf_counter() - proc.started, body
        except OSError:  # not listening yet
            pass
        time.sleep(0.004)
    raise RuntimeError(f"{proc.name}: no answer within {timeout} s; see {proc.log}")


def measure(kind: str, program: List[str], packages: Path, work: Path) -> Dict[str, Any]:
    home = work / f"home-{kind}-{packages.name}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    result: Dict[str, Any] = {}
    for which in ("cold", "warm"):
        proc = start(kind, program, packages, home, work)
        try:
            seconds, body = first_answer(proc)
            result[which] = seconds
            result["bytes"] = len(body)
            result["packages"] = len(json.loads(body)["packages"])
            if which == "cold":
                time.sleep(1 if kind == "gosspks" else 0)  # let it finish writing its cache
                if kind == "spklite":
                    proc.settle()  # md5s done and the snapshot written
                    time.sleep(0.5)
                continue
            time.sleep(0.5)
            result["rss_start"] = proc.rss_mb()
            result["proc"] = proc
            return result
        finally:
            if which == "cold":
                proc.stop()
    raise AssertionError("unreachable")


def loaded(server: Dict[str, Any], seconds: int, request: Dict[str, Any]) -> Dict[str, float]:
    """One load run; the server's RSS sampled half-way (the largest so far kept)."""
    proc = server["proc"]

    def sample() -> None:
        try:
            server["rss_load"] = max(server["rss_load"], proc.rss_mb())
        except OSError:  # exited meanwhile
            pass

    timer = threading.Timer(seconds / 2, sample)
    timer.start()
    try:
        return load(proc.port, seconds=seconds, **request)
    finally:
        timer.join()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gosspks", help="the gosspks binary")
    parser.add_argument("--spklite", default=f"{sys.executable} -m spklite", help="how to run spklite")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--corpus", default=str(Path(tempfile.gettempdir()) / "spklite-bench-corpus"))
    parser.add_argument("--out")
    args = parser.parse_args(argv[1:])
    programs = {"spklite": args.spklite.split(), "gosspks": [args.gosspks]}
    root = Path(args.corpus)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="spklite-vs-gosspks-"))
    rows = ["| N | figure | spklite | gosspks | spklite / gosspks |", "|---:|---|---:|---:|---:|"]
    try:
        for n in (int(size) for size in args.sizes.split(",")):
            packages = folder(root, n)
            print(f"gosspks.py: N={n}", file=sys.stderr, flush=True)
            got = {kind: measure(kind, program, packages, work) for kind, program in programs.items()}
            request = {"paths": [DSM7], "conns": 16}
            for kind in programs:
                load(got[kind]["proc"].port, seconds=1, **request)
            runs: Dict[str, List[Dict[str, float]]] = {kind: [] for kind in programs}
            for kind in programs:
                got[kind].update(restarts=0, rss_load=0.0)
            for _ in range(args.runs):
                for kind in programs:
                    if not got[kind]["proc"].alive():
                        got[kind]["restarts"] += 1
                        home = work / f"home-{kind}-{packages.name}"
                        got[kind]["proc"] = start(kind, programs[kind], packages, home, work)
                        first_answer(got[kind]["proc"])
                    runs[kind].append(loaded(got[kind], args.seconds, request))
            for kind in programs:
                got[kind]["rps"] = median_of(runs[kind])["rps"]
                got[kind]["errors"] = round(sum(r["errors"] for r in runs[kind]))
                got[kind]["proc"].stop()
            ours, theirs = got["spklite"], got["gosspks"]
            for label, key, unit in (("start-up, empty cache (cold)", "cold", "ms"),
                                     ("start-up, cache left by the first start (warm)", "warm", "ms"),
                                     ("RSS after start", "rss_start", "MiB"),
                                     ("catalog DSM 7 GET, 16 clients: req/s", "rps", "/s"),
                                     ("RSS during the load runs", "rss_load", "MiB")):
                a, b = ours[key], theirs[key]
                shown = [f"{v * 1000:.0f} ms" if unit == "ms" else f"{v:.1f} MiB" if unit == "MiB" else f"{v:.0f}/s"
                         for v in (a, b)]
                rows.append(f"| {n:,} | {label} | {shown[0]} | {shown[1]} | {a / b:.2f} |")
            rows.append(f"| {n:,} | answer: packages, bytes; errors under load; restarts | "
                        f"{ours['packages']}, {ours['bytes']:,}; {ours['errors']}; {ours['restarts']} | "
                        f"{theirs['packages']}, {theirs['bytes']:,}; {theirs['errors']}; {theirs['restarts']} | |")
    finally:
        for proc in STARTED:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
            f"{sys.version.split()[0]}, {args.runs} runs × {args.seconds} s (medians), "
            f"load average after {os.getloadavg()[0]:.1f}\n\n"
            + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
