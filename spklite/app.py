"""The Bottle app: every HTTP route, nothing else (SPEC 1).

URLs are made here, per request, from the configured hostname/scheme or the
request's own Host; the catalog and the index never hold URLs.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import threading
from urllib.parse import parse_qsl

import bottle

from spklite import __license__, __version__, counts, files
from spklite.catalog import Catalog, Links, Query, encode, url_path
from spklite.channels import ENVIRON_KEY, MAIN, Channel, Channels
from spklite.config import load_yaml
from spklite.index import Index, State, printable
from spklite.metrics import CONTENT_TYPE as METRICS_TYPE
from spklite.metrics import Metrics
from spklite.yank import Yanked

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
NAS_PARAMS = ("arch", "build")
DEFAULT_ICON = "spklite-default-icon.png"
# Blob names are content hashes: safe to cache forever.
BLOB_NAME = re.compile(r"^[0-9a-f]{16,64}\.(png|jpg|jpeg|gif)$")
# A name (labels of at most 63 characters) or an IP literal, with a port: every answer embeds the Host in its
# URLs, so a 30 KB Host header must not make (and cache) 30 KB URLs.
PLAUSIBLE_HOST = re.compile(r"^(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?(?::[0-9]{1,5})?$"
                            r"|^\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?$")
MAX_HOST = 261  # 253 for the name, 6 for ":65535", brackets
MASKED_PARAMS = frozenset(("ds_sn",))
IMMUTABLE = "public, max-age=31536000, immutable"
ERROR_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>{status} · spklite</title>
<p>{status}: {message}</p><p><a href="/">The package list</a></p></html>"""
FORM_KEY = "spklite.form"  # environ: a POST's form body as read, a WSGI (latin-1) string
MAX_FORM_BODY = 64 << 10  # a NAS form body is ~200 bytes; a larger one counts for nothing
MAX_REMEMBERED_QUERY = 512  # a NAS's query (or DSM 3-6 form) is ~150 characters
MASKED_HEADERS = frozenset(("authorization", "cookie", "proxy-authorization", "x-api-key"))


def bundled(name: str) -> bytes:
    """A data file of the spklite package, e.g. "web/style.css"; read through the package's loader, so that
    it works from a zipapp too (importlib.resources would do the same, but costs ~7 ms and 0.5 MiB to import)."""
    return __loader__.get_data(os.path.join(os.path.dirname(__file__), *name.split("/")))  # type: ignore[name-defined]


def asset(name: str) -> bytes:
    """A file bundled in spklite/web."""
    return bundled("web/" + name)


def load_models(path: str = "") -> List[Dict[str, Any]]:
    """The NAS model list: the operator's YAML file, else the bundled one.

    A file that is not a list of models (gosspks' own models.yml, say) is
    reported and the bundled list is used: the page is a convenience.
    """
    import yaml  # here: only the page and /v1/models need it
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                models = load_yaml(fh.read())
            if not isinstance(models, list):
                raise ValueError("not a YAML list of models")
            return [m for m in models if isinstance(m, dict) and "model" in m]
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.warning("filesystem.models: cannot use %r (%s): using the bundled list",
                        path, " ".join(str(exc).split()))
    return load_yaml(bundled("models.yml"))


class Server:
    """State shared by the routes: settings, the index, the catalog of its current state."""

    def __init__(self, cfg: Mapping[str, Any], index: Index, keyrings: Optional[List[str]] = None,
                 watch_mode: Callable[[], str] = lambda: "off"):
        self.cfg = cfg
        self.index = index
        self.catalog_settings = dict(cfg, keyrings=keyrings or [])
        self.watch_mode = watch_mode
        self.default_icon = asset("default-icon.png")
        self.yanked = Yanked(index.cache_dir)
        self.channels = Channels(cfg)
        # Per channel folder (None: the main catalog), the index state it was built for and the catalog.
        self._catalogs: Dict[Optional[str], Tuple[Any, Catalog]] = {}
        self.counts = counts.Counts(index.cache_dir)
        self.metrics: Optional[Metrics] = None  # make_app sets it when server.metrics is on
        self._catalog_lock = threading.Lock()

    @functools.cached_property
    def models(self) -> List[Dict[str, Any]]:
        """Loaded on first use: YAML parsing is slow without PyYAML's C module (the zipapp)."""
        return load_models(self.cfg.get("filesystem.models", ""))

    def catalog(self, channel: Channel = MAIN) -> Tuple[State, Catalog]:
        """The catalog of the current index state for the channel's files, built once per state (and per write
        of the download counts: at most once per server.counts-interval, never per download)."""
        state = self.index.current
        stamp, yanked = self.yanked.current()  # one stat: a yank shows on the next request
        now = (state.version, stamp, self.counts.version)
        version, catalog = self._catalogs.get(channel.folder, (None, None))
        if version != now or catalog is None:
            with self._catalog_lock:
                version, catalog = self._catalogs.get(channel.folder, (None, None))
                if version != now or catalog is None:
                    records: Iterable[Any] = state.records.values()
                    rejected: Iterable[Any] = state.rejected.values()
                    if self.channels.folders:  # only the channel's files
                        records = [r for r in records if self.channels.folder_of(r.path) == channel.folder]
                        rejected = [r for r in rejected if self.channels.folder_of(r.path) == channel.folder]
                    catalog = Catalog(records, self.catalog_settings, previous=catalog, rejected=rejected,
                                      yanked=yanked, downloads=self.shown_counts(state.records))
                    self._catalogs[channel.folder] = (now, catalog)
        return state, catalog

    def shown_counts(self, records: Mapping[str, Any]) -> Dict[str, int]:
        """The download counts catalog answers show (none when download-count is off)."""
        return self.counts.shown_for(records) if self.cfg["download-count"] else {}

    def links(self, environ: Mapping[str, Any]) -> Links:
        """How this request's URLs are made: under its channel's prefix (a part of every memo key)."""
        scheme = self.cfg["scheme"] or environ.get("wsgi.url_scheme", "http")
        host = self.cfg["hostname"] or request_host(environ)
        prefix = channel_of(environ).prefix
        return Links(f"{scheme}://{host}{prefix}", self.cfg["router.download"], self.cfg["router.static"],
                     DEFAULT_ICON, self.cfg["router.download-url"], self.cfg["router.static-url"])

    def nas_answer(self, environ: Mapping[str, Any], params: Mapping[str, str],
                   request: Optional[Tuple[str, ...]] = None) -> Tuple[bytes, bool]:
        """The catalog answer for a NAS's parameters (memoised by the catalog on exactly what decides it), and
        whether it is gzip-compressed (when the client accepts gzip). `request`: the inputs as received that
        params and links were parsed from (see CatalogFront)."""
        channel = channel_of(environ)
        _, catalog = self.catalog(channel)
        debug = debug_info(environ, params) if self.cfg["debug-package"] else None
        gzip = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
        query = query_of(channel, params.get)
        if self.metrics is not None:
            self.metrics.asked(query, memoised=debug is None)
        return catalog.answer(query, self.links(environ), debug, gzip, request), gzip


def channel_of(environ: Mapping[str, Any]) -> Channel:
    """The channel CatalogFront found the request's path under."""
    return environ.get(ENVIRON_KEY, MAIN)


def query_of(channel: Channel, get: Callable[[str], Optional[str]]) -> Query:
    """A NAS's question as the channel hears it: a beta channel's is the beta channel's, whatever it asked."""
    query = Query.from_params(get)
    return query._replace(beta_channel=True) if channel.beta else query


def request_host(env: Mapping[str, str]) -> str:
    """The Host the client used when it is a plausible host[:port]; X-Forwarded-* only count via waitress'
    trusted proxy. Anything else gets the server's own address (and shares its answers)."""
    host = env.get("HTTP_HOST", "")
    if len(host) <= MAX_HOST and PLAUSIBLE_HOST.match(host) and int(host.rpartition("]")[2].partition(":")[2]
                                                                     or 0) <= 65535:
        return host
    name, port = env.get("SERVER_NAME", "localhost"), env.get("SERVER_PORT", "80")
    return name if port in ("80", "443") else f"{name}:{port}"


def index_key(env: Mapping[str, str], prefix: str) -> str:
    """The index key a download URL names ("" when the path is not under the prefix).

    From the raw path: waitress unquotes it into a Latin-1 str of its bytes, and bottle's decoded
    PATH_INFO has dropped what is not UTF-8. Keys are os.walk's names, i.e. os.fsdecode of the bytes.
    """
    raw = env["bottle.raw_path"].encode("latin-1", "replace")
    head = prefix.encode() + b"/"
    return os.fsdecode(raw[len(head):]) if raw.startswith(head) else ""


def request_params(environ: Dict[str, Any]) -> Dict[str, str]:
    """The parameters of a request to "/": the query string, and for a POST its form body on top (DSM 3-6).

    A GET's body never counts: bottle would read it and let it override the query, so a GET's answer would
    depend on more than its URL. Values are decoded as UTF-8 (invalid bytes still count as given: a NAS
    always gets its JSON, SPEC 1.2) and cut at 256 characters; the last of repeated keys wins, as in bottle.
    """
    query = environ.get("QUERY_STRING", "")
    # A NAS asks the same few questions: their parsing (a third of a request's Python time) is done once.
    params = dict(_parsed_often(query) if len(query) <= MAX_REMEMBERED_QUERY else _parsed(query))
    if environ.get("REQUEST_METHOD") == "POST":
        form = environ[FORM_KEY] = form_body(environ).decode("latin-1")  # the access log shows it too
        params.update(_parsed_often(form) if len(form) <= MAX_REMEMBERED_QUERY else _parsed(form))
    return params


def form_body(environ: Dict[str, Any]) -> bytes:
    """A POST's body when small enough to be a form, else b""; left readable again for bottle."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return b""
    if not 0 < length <= MAX_FORM_BODY:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


@functools.lru_cache(maxsize=256)  # bounded in bytes too: only short texts (see MAX_REMEMBERED_QUERY)
def _parsed_often(text: str) -> Dict[str, str]:
    return _parsed(text)


def _parsed(text: str) -> Dict[str, str]:
    """A query string (PEP 3333: raw bytes as Latin-1 text) as {name: value}."""
    text = text.encode("latin-1", "replace").decode("utf-8", "replace")
    return {k: v[:256] for k, v in parse_qsl(text, keep_blank_values=True, errors="replace", max_num_fields=None)}


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3): gzip or x-gzip with a q-value above 0,
    else * above 0; `gzip;q=0` refuses it. (Parsed on a memo miss only: a request seen before, Accept-Encoding
    included, is answered by CatalogFront without parsing.)"""
    weights: Dict[str, float] = {}
    for item in header.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":  # a q-value that is not one (q=x, q=2) counts as a refusal: never a guess
                weight = float(value) if re.fullmatch(r"\s*(0(\.\d{0,3})?|1(\.0{0,3})?)\s*", value) else 0.0
        weights[coding] = max(weights.get(coding, 0.0), weight)
    named = [weights[c] for c in ("gzip", "x-gzip") if c in weights]
    return max(named) > 0 if named else weights.get("*", 0.0) > 0


def is_nas_request(get: Callable[[str], Optional[str]]) -> bool:
    return any(get(p) is not None for p in NAS_PARAMS) or (get("unique") or "").startswith("synology")


def debug_info(environ: Mapping[str, Any], params: Mapping[str, str]) -> Dict[str, str]:
    """What a NAS sent, for the debug pseudo-package (SPEC 1.8); secrets masked."""
    shown: Dict[str, str] = {}
    for key in sorted(params):
        shown[key] = "***" if key in MASKED_PARAMS else params[key]
    headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    for key, value in sorted(headers.items()):
        shown["header " + key] = "***" if key.lower() in MASKED_HEADERS else str(value)[:256]
    shown["method"] = environ.get("REQUEST_METHOD", "")
    return shown


def json_response(value: Any, status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(encode(value), status=status, **{"Content-Type": JSON_TYPE})


def error(status: int, message: str, **extra: Any) -> bottle.HTTPResponse:
    return json_response({"error": message, **extra}, status)


def make_app(cfg: Mapping[str, Any], index: Index, keyrings: Optional[List[str]] = None,
             watch_mode: Callable[[], str] = lambda: "off") -> "CatalogFront":
    server = Server(cfg, index, keyrings, watch_mode)
    app = bottle.Bottle(catchall=True)
    download, static, accel = cfg["router.download"], cfg["router.static"], cfg["router.accel-redirect"]

    # -- the catalog (CatalogFront answers most of these before bottle) -------------------

    @app.route("/", method=["GET", "POST"])
    def root() -> Any:
        params = request_params(bottle.request.environ)
        if is_nas_request(params.get):
            return nas_response(*server.nas_answer(bottle.request.environ, params))
        if "text/html" in bottle.request.headers.get("Accept", ""):
            from spklite import page  # imported on first use: only people need it

            return page.render(server, params.get)
        return error(400, "this is a Synology package server: a catalog request needs the NAS "
                     "parameters arch and build (also read: major, minor, language, unique, "
                     "package_update_channel)", expected=["arch", "build", "major", "minor",
                                                          "language", "unique", "package_update_channel"])

    @app.get("/getList/v0/<major>/<minor>/<micro>/<build>/<nano>/<arch>/<channel>/<unique>/<language>")
    def get_list(**parts: str) -> Any:
        parts["package_update_channel"] = parts.pop("channel")
        return nas_response(*server.nas_answer(bottle.request.environ, parts))

    # -- files ------------------------------------------------------------------

    # Any path under the prefix, newlines too: the file is found from the raw path (index_key).
    @app.route(download + "/<:re:[\\s\\S]+>", method=["GET", "HEAD"])
    def download_file() -> Any:
        def send(record: Any) -> Any:
            if record is None:
                return None
            path, name = os.path.join(server.index.root, record.path), record.path.rsplit("/", 1)[-1]
            if accel:  # nginx sends the bytes: the file checked here, then named in its internal location
                response = files.handed_to_nginx(path, record.signature, name, f"{accel}/{url_path(record.path)}")
                # nginx answers the Range itself: a download when it starts at byte 0, as spklite counts its own
                counted = bottle.request.get_header("Range", "bytes=0-").startswith("bytes=0-")
            else:
                response = files.send(path, record.signature, name, record.md5)
                counted = response is not None and counts.is_download(
                    bottle.request.method, response.status_code, response.headers.get("Content-Range", ""))
            if response is not None and counted and bottle.request.method == "GET":
                server.counts.add(record)
            return response

        record = server.index.current.records.get(index_key(bottle.request.environ, download))
        if record is not None and server.channels.folder_of(record.path) != channel_of(bottle.request.environ).folder:
            record = None  # another channel's file: offered, and downloaded, only under its prefix
        # None: changed since the index read it, in a way no event has told yet (a symlink's target replaced
        # elsewhere, the settle window, the poll interval): look again now, and serve what is there.
        response = send(record)
        if response is None and record is not None:
            response = send(server.index.refresh(record.path))
        return error(404, "no such package file") if response is None else response

    @app.route(static + "/<name>", method=["GET", "HEAD"])
    def static_file(name: str) -> Any:
        if name == DEFAULT_ICON:
            return default_icon(max_age=86400)
        if not BLOB_NAME.match(name):
            return error(404, "no such file")
        # The name is the content's hash: a strong, quoted validator (bottle's own ETag is not quoted, so a
        # client's If-None-Match never matched it).
        etag, env = '"%s"' % name.partition(".")[0], bottle.request.environ
        if "HTTP_IF_NONE_MATCH" in env and files.not_modified(env, etag, 0):
            return bottle.HTTPResponse(status=304, ETag=etag, **{"Cache-Control": IMMUTABLE})
        # No dates: the blob file's mtime is when this instance's cache got it, so replicas (each with its own
        # cache) would disagree on Last-Modified and on If-Modified-Since. The ETag is the content.
        env.pop("HTTP_IF_MODIFIED_SINCE", None)
        response = bottle.static_file(name, root=server.index.blob_dir)
        if response.status_code == 404 and server.index.cache_error:
            return default_icon(max_age=0)  # icons could not be stored: better a default than none
        response.set_header("Cache-Control", IMMUTABLE)
        response.set_header("ETag", etag)
        if "Last-Modified" in response.headers:
            del response.headers["Last-Modified"]
        return response

    def default_icon(max_age: int) -> bytes:
        bottle.response.set_header("Cache-Control", f"public, max-age={max_age}")
        bottle.response.content_type = "image/png"
        return server.default_icon

    # -- the JSON API -------------------------------------------------------------

    def api(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            app.route(path, method=["GET", "HEAD"], callback=func)
            app.route(path, method="OPTIONS", callback=lambda **_: bottle.HTTPResponse(status=204))
            return func
        return register

    @app.hook("after_request")
    def cors() -> None:
        if not bottle.request.path.startswith((download, static)):
            bottle.response.set_header("Access-Control-Allow-Origin", "*")
            if bottle.request.method == "OPTIONS":
                bottle.response.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
                bottle.response.set_header("Access-Control-Allow-Headers", "Content-Type")

    @api("/about")
    def about() -> Any:
        return json_response({
            "name": "spklite", "version": __version__, "license": __license__,
            "description": "A small, fast Synology package server",
            "download": download, "static": static, "channels": server.channels.public(),
        })

    @api("/health")
    def health() -> Any:
        state = server.index.current
        problems = server.index.problems()
        # The paths of another channel's secret folder are not for this prefix's visitors (its status is).
        asked = channel_of(bottle.request.environ).folder
        hidden = {c.folder for c in server.channels.all if c.secret and c.folder != asked}
        shown = server.index.problems(lambda key: server.channels.folder_of(key) not in hidden) if hidden else problems
        body: Dict[str, Any] = {
            "status": "degraded" if problems else "ok", "packages": len(state.records),
            "rejected": len(state.rejected),
            "watch": server.watch_mode(), "index_version": state.version,
            "from_snapshot": server.index.stats["from_snapshot"], "parsed": server.index.stats["parsed"],
            "md5_pending": len(server.index.pending_md5()),
            "folder_available": os.path.isdir(server.index.root) and "" not in server.index.unreadable,
            "channels": [c["prefix"] for c in server.channels.public()],
        }
        if shown:
            body["problems"] = [{"path": path, "reason": why} for path, why in shown.items()]
        if len(shown) < len(problems):
            body["problems_in_secret_channels"] = len(problems) - len(shown)
        if server.index.cache_error:
            body["cache_error"] = server.index.cache_error
        return json_response(body)

    def in_channels(objs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """File objects with the prefixes that offer them (all of a catalog's files are in the same ones)."""
        serving = server.channels.serving(channel_of(bottle.request.environ).folder)
        for obj in objs:
            obj["channels"] = serving
        return objs

    @api("/v1/packages")
    def packages() -> Any:
        _, catalog = server.catalog(channel_of(bottle.request.environ))
        q = bottle.request.query
        latest = (q.getunicode("latest") or "").lower() in ("1", "true", "yes")
        return json_response(in_channels(catalog.files(
            server.links(bottle.request.environ), platform=q.getunicode("arch") or "",
            name=q.getunicode("name") or "", latest=latest, language=(q.getunicode("language") or "").lower())))

    @api("/v1/packages/<name:path>")
    def package(name: str) -> Any:
        _, catalog = server.catalog(channel_of(bottle.request.environ))
        language = (bottle.request.query.getunicode("language") or "").lower()
        links = server.links(bottle.request.environ)
        if name.lower().endswith(".spk"):  # a file, as /v1/packages shows it
            offers = [o for o in catalog.offers if printable(o.record.path) == name]
            if not offers:
                return error(404, f"no package file {name!r}")
            return json_response(in_channels([catalog.file_object(offers[0], links, language)])[0])
        found = [catalog.file_object(o, links, language) for o in catalog.offers if o.package == name]
        if not found:
            return error(404, f"no package {name!r}")
        return json_response(in_channels(found))

    @api("/v1/stats")
    def stats() -> Any:
        return json_response(server.counts.stats(server.index.current.records, asking=server.metrics is not None))

    if cfg["server.metrics"]:
        @app.get("/metrics")
        def metrics_text() -> Any:
            assert server.metrics is not None
            return bottle.HTTPResponse(server.metrics.text(server), **{"Content-Type": METRICS_TYPE})

    @api("/v1/models")
    def models() -> Any:
        needle = (bottle.request.query.getunicode("name") or "").lower()
        return json_response([m for m in server.models if needle in str(m["model"]).lower()])

    @api("/v1/rejected")
    def rejected() -> Any:
        channel = channel_of(bottle.request.environ)  # the channel's folders and files only
        # By name: the order they were met in is each process's own (a watch meets a folder after the scan).
        folders = [{"file": printable(rel or ".") + "/", "reason": why}
                   for rel, why in sorted(server.index.unreadable.items())
                   if server.channels.folder_of(rel + "/") == channel.folder]
        _, catalog = server.catalog(channel)
        return json_response(folders + [{"file": printable(r.path), "reason": r.reason} for r in catalog.rejected])

    @api("/v1/explain")
    def explain_route() -> Any:
        from spklite import explain, page  # imported on first use: a tool for people

        params = request_params(bottle.request.environ)
        channel = channel_of(bottle.request.environ)
        _, catalog = server.catalog(channel)
        if is_nas_request(params.get):  # the NAS's own parameters, read as the catalog reads them
            query = query_of(channel, params.get)
        else:  # or the page's picker: model, platform, dsm, channel
            choice, messages = page.pick(server.models, params.get)
            if choice is None:
                return error(400, " ".join(messages) or "which NAS? give the NAS parameters (arch, build, unique, "
                             "package_update_channel, ...) or the page's model or platform, dsm and channel",
                             expected=["arch", "build", "unique", "package_update_channel", "model", "platform",
                                       "dsm", "channel", "package"])
            query = query_of(channel, choice.nas_params().get)
        package = params.get("package", "")
        decisions = explain.explain(catalog, query, package)
        offered = sum(d.rule == explain.OFFERED for d in decisions)
        body: Dict[str, Any] = {"nas": explain.nas_json(query), "offered": offered,
                                "not_offered": len(decisions) - offered,
                                "files": [d.to_json() for d in decisions], "rules": explain.RULES}
        if package:
            body["package"] = package
            if not any(d.package is not None for d in decisions):
                body["note"] = f"no package file has the package id {package!r}"
        return json_response(body)

    # -- errors: JSON, never a traceback --------------------------------------------

    for status in (400, 403, 404, 405, 413, 416, 500):
        app.error(status)(lambda err, status=status: json_error_page(err, status))

    # -- publishing: POST /packages, DELETE /packages/<file> (only with API keys) ----------

    if cfg["publish.keys"]:
        from spklite import publish

        publish.add_routes(app, cfg, server)
    if cfg["server.metrics"]:
        server.metrics = Metrics((route.rule for route in app.routes), server.counts.asking)
    return CatalogFront(app, server)


class CatalogFront:
    """WSGI front: a NAS's catalog request is answered here, without bottle's request parsing and routing.

    Dozens of NAS boxes ask the same few questions; the answer comes from the catalog's memo, whose key is
    made of the parsed inputs the answer depends on (Query and Links), bounded in bytes. A request seen
    before, as the same strings (query, POST form, Host, Accept-Encoding, scheme, server address, channel
    prefix: all that the parsing reads),
    is not parsed again: the catalog remembers which memo entry its parsing named (Catalog.remembered). Anything
    else, and a HEAD, goes to bottle, whose "/" route gives the same answer through the same Server.nas_answer.
    """

    def __init__(self, app: bottle.Bottle, server: Server):
        self.app = app
        self.server = server
        self.channels = server.channels if server.channels.prefixed else None

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.channels and environ.get("PATH_INFO") != "/":
            refused = self.enter_channel(environ)
            if refused:
                status, headers, body = refused
                start_response(status, [*headers, ("Content-Length", str(len(body)))])
                return [body]
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO") == "/" and method in ("GET", "POST"):
            answer = self.nas_body(environ, method == "POST")
            if answer is not None:
                body, gzip = answer
                start_response("200 OK", [*catalog_headers(body, gzip), ("Access-Control-Allow-Origin", "*")])
                if self.server.metrics is not None:
                    self.server.metrics.catalog_sent(len(body))
                return [body]
        if self.server.metrics is not None:
            return self.server.metrics.counted(self.app, environ, start_response)
        return self.app(environ, start_response)

    def enter_channel(self, environ: Dict[str, Any]) -> Optional[Tuple[str, List[Tuple[str, str]], bytes]]:
        """A path under a channel's prefix: the prefix moves to SCRIPT_NAME and the channel into the environ,
        so that every route below works as at "/". Returns (status, headers, body) when the path is not to be
        routed."""
        assert self.channels is not None
        found = self.channels.match(environ.get("PATH_INFO", ""))
        if found is None:
            return None
        channel, rest = found
        if not rest:  # "/beta": a NAS is answered (it may not follow a redirect), anyone else sent to "/beta/"
            if not is_nas_request(request_params(environ).get):
                query = environ.get("QUERY_STRING", "")
                # relative: right behind a proxy that serves spklite under a path of its own too
                location = channel.prefix.rsplit("/", 1)[1] + "/" + ("?" + query if query else "")
                return "301 Moved Permanently", [("Location", location)], b""
            rest = "/"
        if rest == "/packages" or rest.startswith("/packages/"):
            return "404 Not Found", [("Content-Type", JSON_TYPE)], encode(
                {"error": "publishing is at /packages, not under a channel's prefix"})
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + channel.prefix
        environ["PATH_INFO"] = rest
        environ[ENVIRON_KEY] = channel
        return None

    def nas_body(self, environ: Dict[str, Any], post: bool) -> Optional[Tuple[bytes, bool]]:
        """The answer to a NAS's catalog request and whether it is gzipped; None when the request is not one."""
        form = ""
        if post:
            form = environ[FORM_KEY] = form_body(environ).decode("latin-1")  # the access log shows it too
        query, host = environ.get("QUERY_STRING", ""), environ.get("HTTP_HOST", "")
        encodings = environ.get("HTTP_ACCEPT_ENCODING", "")
        request: Optional[Tuple[str, ...]] = None
        if max(len(query), len(form), len(encodings)) <= MAX_REMEMBERED_QUERY and len(host) <= MAX_HOST:
            # SCRIPT_NAME: the channel's prefix (its links, its beta flag)
            request = (query, form, host, encodings, environ.get("wsgi.url_scheme", ""),
                       environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", ""), environ.get("SCRIPT_NAME", ""))
            remembered = self.server.catalog(channel_of(environ))[1].remembered(request)
            if remembered is not None:
                body, gzip, asked = remembered
                if self.server.metrics is not None:
                    self.server.metrics.asked(asked, memoised=True)
                return body, gzip
        params = request_params(environ)  # the form again: form_body left it readable
        return self.server.nas_answer(environ, params, request) if is_nas_request(params.get) else None


def nas_response(body: bytes, gzip: bool) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body, headers=catalog_headers(body, gzip))


def catalog_headers(body: bytes, gzip: bool) -> List[Tuple[str, str]]:
    """A catalog answer's headers; Vary always: a cache in front must keep the two forms apart."""
    headers = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body))), ("Vary", "Accept-Encoding")]
    if gzip:
        headers.append(("Content-Encoding", "gzip"))
    return headers


def json_error_page(err: bottle.HTTPError, status: int) -> bytes:
    """JSON for programs; a short page for a browser (an unknown path typed in the address bar)."""
    if status == 500:
        log.error("internal error: %s\n%s", err.exception, err.traceback)
    message = err.body if isinstance(err.body, str) and status != 500 else bottle.HTTP_CODES.get(status, "error")
    if "text/html" in bottle.request.headers.get("Accept", ""):
        bottle.response.content_type = "text/html; charset=utf-8"
        return ERROR_PAGE.format(status=status, message=bottle.html_escape(message)).encode()
    bottle.response.content_type = JSON_TYPE
    return encode({"error": message})
