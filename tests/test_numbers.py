"""Numbers for the operator (issue 14): download counts kept in the cache folder, /v1/stats, /metrics.

Against a real server process: counts must survive a restart and a kill -9, and /metrics must be what a
Prometheus server can scrape (a strict parser of the text format below)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
from conftest import settings, wait_for
from spkbuilder import build_spk

from spklite import config

DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu&unique=synology_apollolake_918%2B"
DSM6 = "/?arch=armada38x&build=25556&major=6&minor=2"
DSM5 = "/?arch=armada370&build=4458&major=5&minor=0"
NO_BUILD = "/?unique=synology_apollolake_918%2B"


@pytest.fixture
def two(packages: Path) -> None:
    build_spk(packages / "a.spk", {"package": "alpha", "version": "1.0-1", "arch": "noarch",
                               "os_min_ver": "7.0-40000"})
    build_spk(packages / "b.spk", {"package": "bravo", "version": "2.0-1", "arch": "noarch",
                                   "os_min_ver": "7.0-40000"})


def request(server: Any, path: str, method: str = "GET", headers: Optional[Dict[str, str]] = None
            ) -> Tuple[int, Dict[str, str], bytes]:
    """Any answer, 304 and 404 included (urllib raises on those)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def served(packages: Path, run_server: Any, *args: str) -> Any:
    server = run_server("--packages", str(packages), *args)
    assert wait_for(lambda: server.json("/health")["md5_pending"] == 0)  # counts are kept under a file's md5
    return server


def entries(server: Any, path: str = DSM7) -> Dict[str, Any]:
    return {e["package"]: e for e in server.json(path)["packages"]}


def file_downloads(server: Any, package: str) -> Dict[str, int]:
    stats = server.json("/v1/stats")["packages"].get(package, {"files": {}})
    return {name: f["downloads"] for name, f in stats["files"].items()}


# -- what counts ------------------------------------------------------------------------------------------


def test_downloads_count_gets_of_the_whole_file_or_from_byte_0_and_survive_a_restart(two, packages, run_server):
    server = served(packages, run_server, "--server-counts-interval", "1h")
    etag = request(server, "/download/a.spk")[1]["etag"]  # 1
    server.get("/download/a.spk")  # 2
    assert request(server, "/download/a.spk", "HEAD")[0] == 200
    assert request(server, "/download/a.spk", headers={"Range": "bytes=0-99"})[0] == 206  # 3
    assert request(server, "/download/a.spk", headers={"Range": "bytes=100-199"})[0] == 206  # a resumption
    assert request(server, "/download/a.spk", headers={"If-None-Match": etag})[0] == 304
    assert request(server, "/download/a.spk", headers={"Range": "bytes=999999-"})[0] == 416
    assert request(server, "/download/nothing.spk")[0] == 404
    server.get("/download/b.spk")
    stats = server.json("/v1/stats")
    assert stats["downloads"] == 4
    assert stats["packages"]["alpha"]["downloads"] == 3 and stats["packages"]["bravo"]["downloads"] == 1
    alpha = stats["packages"]["alpha"]["files"]["a.spk"]
    assert alpha == {"downloads": 3, "md5": entries(server)["alpha"]["md5"], "in_index": True, "version": "1.0-1"}
    # The catalog shows the counts as of the last write (an hour away): its memo is not redone per download.
    assert entries(server)["alpha"]["download_count"] == 0
    assert server.stop() == 0  # a clean stop writes them
    again = served(packages, run_server, "--server-counts-interval", "1h")
    assert file_downloads(again, "alpha") == {"a.spk": 3}
    assert {p: e["download_count"] for p, e in entries(again).items()} == {"alpha": 3, "bravo": 1}
    assert "3 downloads" in again.get("/", {"Accept": "text/html"})[2].decode()  # the page shows them too


def test_catalog_counts_refresh_at_the_interval(two, packages, run_server):
    server = served(packages, run_server, "--server-counts-interval", "1")
    expected = server.json(DSM7)
    server.get("/download/b.spk")
    assert wait_for(lambda: entries(server)["bravo"]["download_count"] == 1, timeout=5)
    expected["packages"][1]["download_count"] = 1  # bravo's; the rest of the answer as it was
    assert server.json(DSM7) == expected


def test_download_count_off_keeps_catalog_answers_free_of_per_instance_numbers(two, packages, run_server):
    # Replicas behind one balancer must answer byte for byte; each counts its own downloads.
    server = served(packages, run_server, "--server-counts-interval", "1", "--no-download-count")
    before = server.get(DSM7)[2]
    server.get("/download/b.spk")
    assert wait_for(lambda: file_downloads(server, "bravo") == {"b.spk": 1}, timeout=5)
    time.sleep(1.5)  # past a write of the counts
    assert server.get(DSM7)[2] == before
    assert entries(server)["bravo"]["download_count"] == 0


def test_counts_survive_kill_9_and_are_counted_once(two, packages, run_server, tmp_path):
    cache = tmp_path / "home" / "cache"
    server = served(packages, run_server, "--server-counts-interval", "1")
    server.get("/download/a.spk")
    server.get("/download/a.spk")
    # Written into counts.json and its log dropped: these two must not count again after a crash.
    assert wait_for(lambda: (cache / "counts.json").exists() and not list(cache.glob("downloads-*.log"))
                    and json.loads((cache / "counts.json").read_text())["files"].get("a.spk", [0, 0])[1] == 2)
    server.get("/download/a.spk")
    server.get("/download/b.spk")
    server.stop(signal.SIGKILL)  # at once: the last two are only in the log
    again = served(packages, run_server, "--server-counts-interval", "1h")
    assert file_downloads(again, "alpha") == {"a.spk": 3} and file_downloads(again, "bravo") == {"b.spk": 1}
    assert entries(again)["alpha"]["download_count"] == 3
    again.get("/download/b.spk")
    again.stop(signal.SIGKILL)  # no write since the start: its log and the one before are replayed, once each
    third = served(packages, run_server, "--server-counts-interval", "1h")
    assert file_downloads(third, "alpha") == {"a.spk": 3} and file_downloads(third, "bravo") == {"b.spk": 2}


def test_a_file_replaced_by_other_bytes_starts_again(two, packages, run_server):
    server = served(packages, run_server, "--server-counts-interval", "1")
    server.get("/download/a.spk")
    server.get("/download/a.spk")
    assert wait_for(lambda: entries(server)["alpha"]["download_count"] == 2, timeout=5)
    build_spk(packages / "new.spk", {"package": "alpha", "version": "1.0-2", "arch": "noarch",
                                     "os_min_ver": "7.0-40000"}).rename(packages / "a.spk")
    assert wait_for(lambda: entries(server)["alpha"]["version"] == "1.0-2" and "md5" in entries(server)["alpha"])
    assert entries(server)["alpha"]["download_count"] == 0  # the old bytes' count is not the new file's
    assert server.json("/v1/stats")["packages"]["alpha"]["files"]["a.spk"]["in_index"] is False
    server.get("/download/a.spk")
    assert file_downloads(server, "alpha") == {"a.spk": 1}
    assert wait_for(lambda: entries(server)["alpha"]["download_count"] == 1, timeout=5)


# -- /v1/stats: who asks ---------------------------------------------------------------------------------


def test_stats_count_catalog_requests_by_platform_build_and_generation(two, packages, run_server):
    server = served(packages, run_server)
    for path in (DSM7, DSM7, DSM6, DSM5, NO_BUILD):
        assert server.get(path)[0] == 200
    assert request(server, "/", "POST", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    stats = server.json("/v1/stats")
    assert stats["catalog"] == {
        "requests": 5,
        "platforms": {"apollolake": 2, "armada370": 1, "armada38x": 1, "none": 1},
        "builds": {"4458": 1, "25556": 1, "42661": 2, "none": 1},
        "dsm": {"5": 1, "6": 1, "7": 2, "none": 1},
    }
    assert stats["downloads"] == 0 and stats["packages"] == {}
    assert stats["counts_interval"] == 60
    assert server.stop() == 0
    again = served(packages, run_server)  # kept with the counts
    again.get(DSM6)
    assert again.json("/v1/stats")["catalog"]["dsm"] == {"5": 1, "6": 2, "7": 2, "none": 1}


# -- /metrics ---------------------------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({METRIC_NAME})(\{{(?:{LABEL}(?:,{LABEL})*)?\}})? (\S+)")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|Inf)|NaN")


def parse_prometheus(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Prometheus' text exposition format 0.0.4, strictly: every line a HELP, a TYPE or a sample; a family's
    HELP and TYPE before its samples, once; TYPE one of the known kinds; counters and gauges not negative;
    no sample twice; the text ends with a newline."""
    assert text.endswith("\n")
    samples: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    types: Dict[str, str] = {}
    helped = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(METRIC_NAME, name) and name not in helped and name not in types, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in types, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
        else:
            match = SAMPLE.fullmatch(line)
            assert match and NUMBER.fullmatch(match.group(3)), line
            name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
            assert name in types, f"sample before its TYPE: {line}"
            assert value >= 0 and (types[name] != "counter" or name.endswith("_total")), line
            key = (name, tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)))
            assert key not in samples, f"twice: {line}"
            samples[key] = value
    return samples


def change(before: Dict[Any, float], after: Dict[Any, float], name: str, **labels: str) -> float:
    """How far a sample moved between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def scrape(server: Any) -> Tuple[Dict[Any, float], int]:
    status, headers, body = request(server, "/metrics")
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_prometheus(body.decode("utf-8")), len(body)


def test_metrics_parse_as_prometheus_text_and_move_with_requests(two, packages, run_server):
    server = served(packages, run_server)
    before, scraped = scrape(server)
    assert before[("spklite_index_files", ())] == 2 and before[("spklite_index_rejected_files", ())] == 0
    assert before[("spklite_md5_pending", ())] == 0
    assert before[("process_start_time_seconds", ())] <= before[("spklite_index_last_change_timestamp_seconds", ())]
    sent = scraped
    for path in (DSM7, DSM7, DSM6):
        sent += len(server.get(path)[2])
    sent += len(server.get("/download/a.spk")[2])
    status, _, body = request(server, "/no/such/route")
    assert status == 404
    sent += len(body)
    request(server, "/download/a.spk", "HEAD")  # sends no body
    sent += len(server.get("/v1/packages/alpha")[2])
    after, _ = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return change(before, after, name, **labels)

    assert moved("spklite_requests_total", route="/", status="200") == 3
    assert moved("spklite_requests_total", route="/download", status="200") == 2  # the GET and the HEAD
    assert moved("spklite_requests_total", route="other", status="404") == 1
    assert moved("spklite_requests_total", route="/v1/packages", status="200") == 1
    assert moved("spklite_requests_total", route="/metrics", status="200") == 1  # the first scrape
    assert moved("spklite_catalog_answers_total", dsm="7") == 2 and moved("spklite_catalog_answers_total", dsm="6") == 1
    assert moved("spklite_memo_hits_total") + moved("spklite_memo_misses_total") == 3
    assert moved("spklite_memo_hits_total") >= 1  # the second DSM 7 question
    assert moved("spklite_downloads_total") == 1
    assert moved("spklite_sent_bytes_total") == sent


def test_a_gzip_answer_counts_one_memo_lookup(two, packages, run_server):
    """A compressed answer is one memo entry: its first request one miss, the same request again one hit."""
    server = served(packages, run_server)
    before, _ = scrape(server)
    for _ in range(2):
        status, headers, _ = request(server, DSM7, headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers["content-encoding"] == "gzip"
    after, _ = scrape(server)
    assert change(before, after, "spklite_memo_misses_total") == 1
    assert change(before, after, "spklite_memo_hits_total") == 1


def test_metrics_off_counts_nothing_on_the_request_path(two, packages, run_server):
    server = served(packages, run_server, "--no-server-metrics")
    server.get(DSM7)
    assert request(server, "/metrics")[0] == 404
    server.get("/download/a.spk")  # download counts are not metrics: they stay
    stats = server.json("/v1/stats")
    assert stats["catalog"] is None and stats["downloads"] == 1


def test_metrics_is_no_download_prefix(tmp_path):
    with pytest.raises(config.ConfigError, match="router.download"):
        settings(tmp_path, **{"router.download": "/metrics"})


def test_a_second_process_on_the_same_cache_folder_counts_in_memory_only(two, packages, run_server):
    first = served(packages, run_server, "--server-counts-interval", "1")
    second = served(packages, run_server, "--server-counts-interval", "1")  # the same home, so the same cache
    assert "another spklite counts downloads" in second.output()
    first.get("/download/a.spk")
    second.get("/download/b.spk")
    second.get("/download/b.spk")
    assert file_downloads(second, "bravo") == {"b.spk": 2}  # its own, in memory
    assert wait_for(lambda: entries(second)["bravo"]["download_count"] == 2, timeout=5)  # and in its answers
    second.stop(signal.SIGKILL)
    assert first.stop() == 0
    again = served(packages, run_server)
    assert file_downloads(again, "alpha") == {"a.spk": 1} and file_downloads(again, "bravo") == {}


def test_a_damaged_counts_file_and_a_cut_log_line_are_survived(two, packages, run_server, tmp_path):
    cache = tmp_path / "home" / "cache"
    cache.mkdir(parents=True)
    (cache / "counts.json").write_text('{"schema": 1, "files": {"a.spk": ["", "many"')  # cut short
    (cache / "downloads-3.log").write_text('["a.spk", "", "alpha"]\n["b.spk", "", "bravo"]\n["a.spk", "", "al')
    server = served(packages, run_server)
    assert "ignoring" in server.output() and "counts.json" in server.output()
    assert file_downloads(server, "alpha") == {"a.spk": 1} and file_downloads(server, "bravo") == {"b.spk": 1}
    assert server.stop() == 0
    assert json.loads((cache / "counts.json").read_text())["files"]["a.spk"][1] == 1
    assert not list(cache.glob("downloads-*.log"))
