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

import bottle

from spklite import __license__, __version__, files
from spklite.catalog import Catalog, Links, Query, encode
from spklite.config import load_yaml
from spklite.index import Index, State

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
NAS_PARAMS = ("arch", "build")
DEFAULT_ICON = "spklite-default-icon.png"
# Blob names are content hashes: safe to cache forever.
BLOB_NAME = re.compile(r"^[0-9a-f]{16,64}\.(png|jpg|jpeg|gif)$")
SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
MASKED_PARAMS = frozenset(("ds_sn",))
REPLAYABLE = "spklite.replayable"  # environ flag: this answer may be replayed (see AnswerCache)
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
        self._catalog: Tuple[int, Catalog] = (-1, Catalog([], self.catalog_settings))
        self._catalog_lock = threading.Lock()

    @functools.cached_property
    def models(self) -> List[Dict[str, Any]]:
        """Loaded on first use: YAML parsing is slow without PyYAML's C module (the zipapp)."""
        return load_models(self.cfg.get("filesystem.models", ""))

    def catalog(self) -> Tuple[State, Catalog]:
        """The catalog of the current index state, built once per state."""
        state = self.index.current
        version, catalog = self._catalog
        if version != state.version:
            with self._catalog_lock:
                version, catalog = self._catalog
                if version != state.version:
                    catalog = Catalog(state.records.values(), self.catalog_settings, previous=catalog)
                    self._catalog = (state.version, catalog)
        return state, catalog

    def links(self) -> Links:
        env = bottle.request.environ
        scheme = self.cfg["scheme"] or env.get("wsgi.url_scheme", "http")
        host = self.cfg["hostname"] or request_host(env)
        return Links(f"{scheme}://{host}", self.cfg["router.download"], self.cfg["router.static"], DEFAULT_ICON)


def request_host(env: Mapping[str, str]) -> str:
    """The Host the client used; X-Forwarded-* only count via waitress' trusted proxy."""
    host = env.get("HTTP_HOST", "")
    if SAFE_HOST.match(host):
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


def param_getter() -> Callable[[str], Optional[str]]:
    """Read a parameter from the query string or the form body (DSM 3/4 POST)."""
    req = bottle.request
    try:
        params = req.params
    except bottle.HTTPError:  # a body too large to parse: the query string still counts
        params = req.query
    def get(name: str) -> Optional[str]:
        value = params.get(name)  # bottle keeps the raw bytes as Latin-1 text
        if value is None:
            return None
        # Not UTF-8 (`arch=%ff`) still counts as given: a NAS always gets its JSON (SPEC 1.2).
        return value.encode("latin-1", "replace").decode("utf-8", "replace")[:256]
    return get


def json_response(value: Any, status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(encode(value), status=status, **{"Content-Type": JSON_TYPE})


def error(status: int, message: str, **extra: Any) -> bottle.HTTPResponse:
    return json_response({"error": message, **extra}, status)


def make_app(cfg: Mapping[str, Any], index: Index, keyrings: Optional[List[str]] = None,
             watch_mode: Callable[[], str] = lambda: "off") -> "AnswerCache":
    server = Server(cfg, index, keyrings, watch_mode)
    app = bottle.Bottle(catchall=True)
    download, static = cfg["router.download"], cfg["router.static"]

    # -- the catalog ------------------------------------------------------------

    def nas_answer(get: Callable[[str], Optional[str]]) -> bottle.HTTPResponse:
        _, catalog = server.catalog()
        query = Query.from_params(get)
        if cfg["debug-package"]:
            body = catalog.answer(query, server.links(), debug_info(get))
        else:
            body = catalog.answer(query, server.links())
            bottle.request.environ[REPLAYABLE] = True
        return bottle.HTTPResponse(body, **{"Content-Type": JSON_TYPE})

    @app.route("/", method=["GET", "POST"])
    def root() -> Any:
        get = param_getter()
        unique = get("unique") or ""
        if any(get(p) is not None for p in NAS_PARAMS) or unique.startswith("synology"):
            return nas_answer(get)
        if "text/html" in bottle.request.headers.get("Accept", ""):
            from spklite import page  # imported on first use: only people need it

            return page.render(server, get)
        return error(400, "this is a Synology package server: a catalog request needs the NAS "
                     "parameters arch and build (also read: major, minor, language, unique, "
                     "package_update_channel)", expected=["arch", "build", "major", "minor",
                                                          "language", "unique", "package_update_channel"])

    @app.get("/getList/v0/<major>/<minor>/<micro>/<build>/<nano>/<arch>/<channel>/<unique>/<language>")
    def get_list(**parts: str) -> Any:
        parts["package_update_channel"] = parts.pop("channel")
        return nas_answer(parts.get)

    def debug_info(get: Callable[[str], Optional[str]]) -> Dict[str, str]:
        req = bottle.request
        shown: Dict[str, str] = {}
        for key in sorted(set(req.query.keys()) | set(_form_keys())):
            shown[key] = "***" if key in MASKED_PARAMS else (get(key) or "")
        for key, value in sorted(req.headers.items()):
            shown["header " + key] = "***" if key.lower() in MASKED_HEADERS else value[:256]
        shown["method"] = req.method
        return shown

    # -- files ------------------------------------------------------------------

    # Any path under the prefix, newlines too: the file is found from the raw path (index_key).
    @app.route(download + "/<:re:[\\s\\S]+>", method=["GET", "HEAD"])
    def download_file() -> Any:
        record = server.index.current.records.get(index_key(bottle.request.environ, download))
        if record is None:
            return error(404, "no such package file")
        path = record.path
        response = files.send(os.path.join(server.index.root, path), record.signature, path.rsplit("/", 1)[-1])
        if response is None:  # deleted, renamed or replaced since the index was read
            return error(404, "no such package file")
        return response

    @app.route(static + "/<name>", method=["GET", "HEAD"])
    def static_file(name: str) -> Any:
        if name == DEFAULT_ICON:
            return default_icon(max_age=86400)
        if not BLOB_NAME.match(name):
            return error(404, "no such file")
        response = bottle.static_file(name, root=server.index.blob_dir)
        if response.status_code == 404 and server.index.cache_error:
            return default_icon(max_age=0)  # icons could not be stored: better a default than none
        response.set_header("Cache-Control", "public, max-age=31536000, immutable")
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
            "download": download, "static": static,
        })

    @api("/health")
    def health() -> Any:
        state = server.index.current
        body = {
            "status": "ok", "packages": len(state.records), "rejected": len(state.rejected),
            "watch": server.watch_mode(), "index_version": state.version,
            "from_snapshot": server.index.stats["from_snapshot"], "parsed": server.index.stats["parsed"],
            "md5_pending": len(server.index.pending_md5()),
            "folder_available": os.path.isdir(server.index.root),
        }
        if server.index.cache_error:
            body["cache_error"] = server.index.cache_error
        return json_response(body)

    @api("/v1/packages")
    def packages() -> Any:
        _, catalog = server.catalog()
        q = bottle.request.query
        latest = (q.getunicode("latest") or "").lower() in ("1", "true", "yes")
        return json_response(catalog.files(
            server.links(), platform=q.getunicode("arch") or "", name=q.getunicode("name") or "",
            latest=latest, language=(q.getunicode("language") or "").lower()))

    @api("/v1/packages/<name:path>")
    def package(name: str) -> Any:
        _, catalog = server.catalog()
        language = (bottle.request.query.getunicode("language") or "").lower()
        if name.lower().endswith(".spk"):
            offers = [o for o in catalog.offers if o.record.path == name]
            if not offers:
                return error(404, f"no package file {name!r}")
            return json_response(catalog.file_object(offers[0], server.links(), language))
        found = [catalog.file_object(o, server.links(), language) for o in catalog.offers if o.package == name]
        if not found:
            return error(404, f"no package {name!r}")
        return json_response(found)

    @api("/v1/models")
    def models() -> Any:
        needle = (bottle.request.query.getunicode("name") or "").lower()
        return json_response([m for m in server.models if needle in str(m["model"]).lower()])

    @api("/v1/rejected")
    def rejected() -> Any:
        return json_response([{"file": r.path, "reason": r.reason} for r in server.index.current.rejected.values()])

    # -- errors: JSON, never a traceback --------------------------------------------

    for status in (400, 403, 404, 405, 413, 416, 500):
        app.error(status)(lambda err, status=status: json_error_page(err, status))
    return AnswerCache(app, index)


class AnswerCache:
    """WSGI front: replays finished NAS answers for byte-identical requests.

    Dozens of NAS boxes ask the same few questions; a replay skips request
    parsing and routing entirely. Entries are kept for one index state only.
    The key holds everything the answer depends on: method, query, form body,
    Host and scheme (after waitress applied a trusted proxy's headers).
    """

    MAX_ENTRIES = 1024
    MAX_BODY = 8192  # a NAS form body is ~200 bytes

    def __init__(self, app: bottle.Bottle, index: Index):
        self.app = app
        self.index = index
        self.version = -1
        self.answers: Dict[tuple, Tuple[str, List[Tuple[str, str]], bytes]] = {}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/":
            return self.app(environ, start_response)
        key = self._key(environ)
        if key is None:
            return self.app(environ, start_response)
        version = self.index.current.version
        if version != self.version:
            self.answers, self.version = {}, version
        answer = self.answers.get(key)
        if answer is not None:
            start_response(answer[0], answer[1])
            return [answer[2]]
        captured: List[Any] = []

        def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return start_response(status, headers, exc_info)

        result = self.app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        if environ.get(REPLAYABLE) and captured:
            if len(self.answers) >= self.MAX_ENTRIES:
                self.answers = {}  # simple bound: distinct questions are few
            self.answers[key] = (captured[0], captured[1], body)
        return [body]

    def _key(self, environ: Dict[str, Any]) -> Optional[tuple]:
        method = environ.get("REQUEST_METHOD")
        body = b""
        if method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return None
            if not 0 <= length <= self.MAX_BODY:
                return None
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)  # bottle reads it again on a miss
        elif method != "GET":
            return None
        return (method, environ.get("QUERY_STRING", ""), body, environ.get("CONTENT_TYPE", ""),
                environ.get("HTTP_HOST", ""), environ.get("wsgi.url_scheme", ""))


def json_error_page(err: bottle.HTTPError, status: int) -> bytes:
    if status == 500:
        log.error("internal error: %s\n%s", err.exception, err.traceback)
    bottle.response.content_type = JSON_TYPE
    message = err.body if isinstance(err.body, str) and status != 500 else bottle.HTTP_CODES.get(status, "error")
    return encode({"error": message})


def _form_keys() -> List[str]:
    try:
        return list(bottle.request.forms.keys())
    except bottle.HTTPError:
        return []
