"""Request counters and GET /metrics in Prometheus' text exposition format (version 0.0.4), written by hand.

Counting is plain integer increments in dicts and attributes, without a lock: the catalog's hot path must not
serialise on one (make bench: counting on vs off). Under the GIL a thread switch between the read and the
write of one counter can lose an increment; at thousands of requests a second that is noise in a rate, and
/metrics is for trends, not accounting (download counts are exact: spklite.counts).

Off (`server.metrics: false`): nothing is counted on the request path and /metrics is not served.
"""

from __future__ import annotations

import time

from spklite.catalog import Catalog
from spklite.channels import under

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CATALOG_OK = ("/", "200")
OTHER = "other"


def route_label(rule: str) -> str:
    """A bottle rule's fixed start, the label its requests count under: "/v1/packages/<name:path>" ->
    "/v1/packages"."""
    return rule.split("<", 1)[0].rstrip("/") or "/"


class Metrics:
    """The counters of one server process since it started, and their exposition."""

    def __init__(self, rules: Iterable[str], asking: Any):  # asking: counts.Asking
        # Longest first: a path counts under the most specific route it is under; anything else is "other",
        # so the number of label values stays that of the routes whatever paths clients try.
        self.routes = sorted({route_label(rule) for rule in rules} - {"/"}, key=len, reverse=True)
        self.asking = asking
        self.requests: Dict[Tuple[str, str], int] = {CATALOG_OK: 0}
        self.sent = 0
        self.memo_lookups = 0
        self.started = time.time()

    def route_of(self, path: str) -> str:
        if path == "/":
            return "/"
        for route in self.routes:
            if under(path, route):
                return route
        return OTHER

    # -- counting ---------------------------------------------------------------------------------------

    def asked(self, query: Any, memoised: bool) -> None:
        """A catalog answer for `query` (catalog.Query); `memoised`: looked up in the answer memo."""
        self.asking.count(query)
        if memoised:
            self.memo_lookups += 1

    def catalog_sent(self, size: int) -> None:
        """The catalog fast path (app.CatalogFront) answered 200 with `size` bytes."""
        self.requests[CATALOG_OK] += 1
        self.sent += size

    def counted(self, app: Callable[..., Any], environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Call the WSGI `app`, counting its answer by route and status, and its Content-Length as sent bytes
        (what was promised: a client that leaves early counts whole; HEAD and 304 answers send no body)."""
        route = self.route_of(environ.get("PATH_INFO", ""))
        head = environ.get("REQUEST_METHOD") == "HEAD"

        def start(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
            key = (route, status[:3])
            self.requests[key] = self.requests.get(key, 0) + 1
            if not head:
                for name, value in headers:
                    if name.lower() == "content-length" and value.isdigit():
                        self.sent += int(value)
            return start_response(status, headers, exc_info)

        return app(environ, start)

    # -- the exposition -----------------------------------------------------------------------------------

    def text(self, server: Any) -> str:
        """GET /metrics: every family with HELP and TYPE, then its samples. Label values come from fixed sets
        (routes, three-digit statuses, DSM generations): nothing to escape."""
        index, counts = server.index, server.counts
        state = index.current
        requests = dict(self.requests)
        misses = Catalog.memo_misses
        out: List[str] = []

        def family(name: str, kind: str, help_text: str, samples: Iterable[Tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out.extend(f"{name}{labels} {value:.3f}\n" if isinstance(value, float) else f"{name}{labels} {value}\n"
                       for labels, value in samples)

        family("spklite_requests_total", "counter", "HTTP requests answered, by route and status.",
               ((f'{{route="{route}",status="{status}"}}', n) for (route, status), n in sorted(requests.items())))
        family("spklite_catalog_answers_total", "counter", "Catalog answers by the DSM generation asking "
               "(5: DSM 5 and older; none: no usable build), counted since counts began in this cache folder.",
               ((f'{{dsm="{dsm}"}}', n) for dsm, n in sorted(dict(self.asking.dsm).items())))
        family("spklite_sent_bytes_total", "counter", "Bytes of answer bodies sent (their Content-Length).",
               [("", self.sent)])
        family("spklite_downloads_total", "counter", "Package downloads since start (a GET of the whole file "
               "or of a range from byte 0).", [("", counts.downloads)])
        family("spklite_index_files", "gauge", "Valid package files in the index.", [("", len(state.records))])
        family("spklite_index_rejected_files", "gauge", "Package files rejected (see /v1/rejected).",
               [("", len(state.rejected))])
        family("spklite_index_last_change_timestamp_seconds", "gauge", "When a file was last added, replaced, "
               "removed or rejected (Unix time; the start when none was since).", [("", float(index.changed))])
        family("spklite_md5_pending", "gauge", "Package files whose md5 is not computed yet.",
               [("", len(index.pending_md5()))])
        family("spklite_memo_hits_total", "counter", "Catalog answers taken from the answer memo.",
               [("", max(0, self.memo_lookups - misses))])
        family("spklite_memo_misses_total", "counter", "Catalog answers computed (not in the memo).",
               [("", misses)])
        family("process_start_time_seconds", "gauge", "When this spklite process started (Unix time).",
               [("", float(self.started))])
        return "".join(out)
