"""Publishing: accept and remove uploaded package files (spksrc's `make publish`, curl, CI).

`POST /packages` takes a raw .spk body with an API key as the Basic-auth user name (spkrepo's API, which
spksrc's publish recipe speaks), checks it as `spklite check` does and lands it atomically in the publish
folder; `DELETE /packages/<file>` removes one from there. Nothing else in the packages folder is written.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import threading

import bottle

from spklite import spk
from spklite.app import Server, json_response
from spklite.channels import ENVIRON_KEY
from spklite.config import ConfigError
from spklite.index import is_candidate_name, printable, remove_temps

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

ROUTE = "/packages"
TEMP_PREFIX = ".spklite-upload-"  # hidden and not .spk: the index never offers a file being received
ABANDONED = 86400  # seconds: another instance's temporary file this old is no upload under way
CHUNK = 1 << 20
CHALLENGE = 'Basic realm="spklite publish", charset="UTF-8"'

log = logging.getLogger(__name__)


# Keys #######################################################################################################
# A key is 32 random bytes: nothing to guess, so a salted HMAC-SHA256 is as strong as a slow KDF would be, and
# costs no OpenSSL (hashlib.pbkdf2_hmac and scrypt need it, which spklite keeps out of a server's memory).


def key_hash(key: str, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def new_key(name: str) -> Tuple[str, str]:
    """(the key, the config entry NAME:SALT:HASH that stores only its salted hash)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise ValueError("a key name is 1 to 64 letters, digits, dots, dashes or underscores")
    key, salt = secrets.token_urlsafe(32), secrets.token_hex(16)
    return key, f"{name}:{salt}:{key_hash(key, salt)}"


def key_name(entries: List[str], key: str) -> Optional[str]:
    """The name of the configured key `key` is, or None. Every entry is compared, in constant time each."""
    found = None
    for entry in entries:
        name, salt, digest = entry.split(":")
        if hmac.compare_digest(key_hash(key, salt), digest) and found is None:
            found = name
    return found


# Files ######################################################################################################


def publish_folder(cfg: Mapping[str, Any]) -> str:
    """The absolute publish folder: strictly inside the packages folder (relative settings are relative to it)."""
    root = os.path.abspath(cfg["filesystem.packages"])
    folder = os.path.normpath(os.path.join(root, os.path.expanduser(cfg["publish.folder"] or "published")))
    if not folder.startswith(root.rstrip("/") + "/"):
        raise ConfigError(f"publish.folder: '{cfg['publish.folder']}' is not allowed: a folder inside the packages "
                          f"folder ('{root}')")
    return folder


def safe(text: str) -> str:
    """A piece of a file name: what is not a letter, digit, dot, plus or dash becomes an underscore."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text).lstrip(".") or "_"


def file_name(info: Mapping[str, str]) -> str:
    """<package>_<arch>_<version>.spk, as spksrc names its builds (several arches joined by dashes)."""
    return f"{safe(info['package'])}_{safe('-'.join(info.get('arch', 'noarch').split()))}_{safe(info['version'])}.spk"


def identity(info: Mapping[str, str]) -> Tuple[str, str, frozenset]:
    """What makes two files the same build: package, version and arch set."""
    return info["package"], info["version"], frozenset(info.get("arch", "").split())


class Publisher:
    """The publish routes' work, for one server."""

    def __init__(self, cfg: Mapping[str, Any], server: Server):
        self.server = server
        self.keys: List[str] = cfg["publish.keys"]
        self.strict = cfg["publish.strict"]
        self.overwrite = cfg["publish.overwrite"]
        self.max_size = cfg["publish.max-size"]
        self.md5 = cfg["md5"]
        self.folder = publish_folder(cfg)
        self.rel = os.path.relpath(self.folder, server.index.root)
        self.lock = threading.Lock()  # the conflict check and the landing, one upload at a time
        # Instances may share the folder: each removes the uploads a crash cut short (kill -9, power loss) of its
        # own, and another's only long after (it may be receiving one now).
        self.temp_prefix = f"{TEMP_PREFIX}{instance_tag(cfg['filesystem.cache'])}-"
        remove_temps(self.folder, self.temp_prefix)
        remove_temps(self.folder, TEMP_PREFIX, older_than=ABANDONED)

    def authorized(self, environ: Mapping[str, Any]) -> Optional[str]:
        """The key's name when the request carries a configured key as its Basic-auth user name."""
        auth = bottle.parse_auth(environ.get("HTTP_AUTHORIZATION", ""))
        return key_name(self.keys, auth[0]) if auth else None

    def upload(self, environ: Dict[str, Any], overwrite: bool, by: str) -> bottle.HTTPResponse:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return answer(400, "no data to process: send the .spk as the request body")
        if length > self.max_size:
            return answer(413, f"larger than publish.max-size ({self.max_size} bytes)")
        if overwrite and not self.overwrite:
            return answer(403, "overwriting is not allowed here (publish.overwrite)")
        if not os.path.isdir(self.server.index.root):  # an unmounted disk: nothing is made on its mount point
            return answer(507, "the packages folder is not available")
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd, temp = _temp_file(self.folder, self.temp_prefix)
        except OSError as exc:
            return answer(507, f"cannot write to the publish folder: {exc.strerror or exc}")
        try:
            with os.fdopen(fd, "wb") as out:
                received = _copy(environ["wsgi.input"], out, length)
                if received < length:
                    return answer(400, f"the body ended after {received} of {length} bytes")
                out.flush()
                os.fsync(out.fileno())  # whole on disk before it has a name the index can see
            reason, warnings, package = spk.check(temp)
            if package is None or (self.strict and warnings):
                reasons = [reason] if reason else []
                return answer(422, "invalid package: " + "; ".join(reasons + warnings), reasons=reasons,
                              warnings=warnings)
            return self.land(temp, package.info, overwrite, environ, by)
        except OSError as exc:
            return answer(507, f"cannot write to the publish folder: {exc.strerror or exc}")
        finally:
            try:
                os.unlink(temp)
            except OSError:
                pass

    def land(self, temp: str, info: Mapping[str, str], overwrite: bool, environ: Dict[str, Any], by: str) -> Any:
        name = file_name(info)
        rel = os.path.join(self.rel, name)
        target = os.path.join(self.folder, name)
        index = self.server.index
        with self.lock:
            same = [path for path, record in index.current.records.items()
                    if identity(record.package.info) == identity(info) and (path != rel or not overwrite)]
            if same:
                shown = [printable(p) for p in same]
                return answer(409, f"{info['package']} {info['version']} for {info.get('arch', '')} is already "
                              f"published as {', '.join(shown)}", files=shown)
            os.chmod(temp, 0o644)
            if overwrite:
                os.replace(temp, target)
            else:
                try:
                    os.link(temp, target)  # never replaces: of two uploads of one file, exactly one lands
                except FileExistsError:
                    return answer(409, f"{printable(rel)} is already published", files=[printable(rel)])
            record = index.update([rel]).records.get(rel)
        log.info("published %s (key %s)", printable(rel), by)
        if record is None:  # refused by the index after passing the check: not expected, but never a 500
            return answer(201, "published", file=printable(rel))
        if self.md5:
            index.fill_md5([record])
        return self.created(rel, environ)

    def created(self, rel: str, environ: Dict[str, Any]) -> bottle.HTTPResponse:
        """201 with the object /v1/packages/<file> gives, and spkrepo's firmware and architectures."""
        channels = self.server.channels
        channel = channels.home(channels.folder_of(rel))  # a publish folder may be a channel's
        _, catalog = self.server.catalog(channel)
        links = self.server.links({**environ, ENVIRON_KEY: channel})
        offer = next((o for o in catalog.offers if o.record.path == rel), None)
        if offer is None:
            return answer(201, "published", file=printable(rel))
        body = catalog.file_object(offer, links)
        body["channels"] = channels.serving(channel.folder)
        body["firmware"] = body.get("os_min_ver", "")
        body["architectures"] = body.get("arch", "").split()
        response = json_response(body, 201)
        response.set_header("Location", f"{channel.prefix}/v1/packages/{printable(rel)}")
        return response

    def delete(self, name: str, by: str) -> bottle.HTTPResponse:
        """Remove a published file: a name in the publish folder (or its /v1 file name, folder included)."""
        name = name[len(self.rel) + 1:] if name.startswith(self.rel + "/") else name
        if "/" in name or not is_candidate_name(name):
            return answer(404, f"no published file {name!r}")
        rel = os.path.join(self.rel, name)
        with self.lock:
            try:
                os.unlink(os.path.join(self.folder, name))
            except FileNotFoundError:
                return answer(404, f"no published file {name!r}")
            except OSError as exc:
                return answer(507, f"cannot remove {name!r}: {exc.strerror or exc}")
            self.server.index.update([rel])
        log.info("deleted %s (key %s)", printable(rel), by)
        return answer(200, "deleted", file=printable(rel))


def instance_tag(cache: str) -> str:
    """This instance, and its restarts, among those sharing a publish folder: its machine and cache folder."""
    return hashlib.sha256(f"{socket.gethostname()}\0{os.path.realpath(cache)}".encode()).hexdigest()[:8]


def _temp_file(folder: str, prefix: str) -> Tuple[int, str]:
    name = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}.tmp")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name


def _copy(source: Any, out: Any, length: int) -> int:
    """Copy `length` bytes of a request body in chunks (never whole in memory); the bytes copied."""
    copied = 0
    while copied < length:
        chunk = source.read(min(CHUNK, length - copied))
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
    return copied


def answer(status: int, message: str, **extra: Any) -> bottle.HTTPResponse:
    """spkrepo's shape ({"message": ...}): spksrc's publish log picks lines starting with it."""
    return json_response({"message": message, **extra}, status)


def add_routes(app: bottle.Bottle, cfg: Mapping[str, Any], server: Server) -> None:
    """POST /packages and DELETE /packages/<file>, when keys are configured (else no such route: 404)."""
    if not cfg["publish.keys"]:
        return
    for key in ("router.download", "router.static"):
        if cfg[key] == ROUTE or cfg[key].startswith(ROUTE + "/"):
            raise ConfigError(f"{key}: '{cfg[key]}' is not allowed while publishing: {ROUTE} is the upload route")
    publisher = Publisher(cfg, server)

    def authorized(work: Any) -> Any:
        name = publisher.authorized(bottle.request.environ)
        if name is None:
            response = answer(401, "an API key is needed: send it as the Basic-auth user name (curl -u KEY:)")
            response.set_header("WWW-Authenticate", CHALLENGE)
            return response
        return work(name)

    @app.post(ROUTE)
    def upload() -> Any:
        overwrite = (bottle.request.query.getunicode("overwrite") or "").lower() in ("1", "true", "yes")
        return authorized(lambda by: publisher.upload(bottle.request.environ, overwrite, by))

    @app.delete(ROUTE + "/<name:path>")
    def delete(name: str) -> Any:
        return authorized(lambda by: publisher.delete(name, by))
