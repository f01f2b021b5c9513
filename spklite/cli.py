"""The command line, generated from the config schema: `spklite [COMMAND] [flags]`.

Commands: serve (the default), config, version, check FILE.spk..., scan, doctor [URL], mirror URL. Flags may stand
before or after the command; gosspks' flag names and short letters work, and its cache flags are accepted and ignored.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence

from spklite import __version__, config
from spklite.config import SCHEMA, ConfigError, Setting

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any

PROG = "spklite"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the journal stamps each line itself
# gosspks' in-memory cache flags: old command lines must still start, but the index is live (no TTL).
IGNORED_FLAGS = (
    "--packages-cache-count",
    "--packages-cache-duration",
    "--packages-cache-refresh",
    "--models-cache-duration",
    "--models-cache-refresh",
)
AFTER = "after:"  # dest prefix of the flags given after the command (argparse would let them overwrite lists)
COMMANDS = (  # name, gosspks' aliases, help
    ("serve", (), "serve the packages folder (the default command)"),
    ("config", ("c",), "print the effective configuration"),
    ("version", ("v",), "print the version"),
    ("check", (), "check .spk files (or every one under a folder) like a linter: exit 1 when one is rejected"),
    ("scan", (), "index the packages folder, write the snapshot, print a summary"),
    ("doctor", (), "check a package source (default: this server) as DSM 7, 6 and 5 units see it"),
    ("mirror", (), "copy the files another package source offers chosen NAS units into a folder served here"),
    ("yank", (), "stop offering package files (they stay on disk; unyank offers them again)"),
    ("unyank", (), "offer yanked package files again"),
    ("prune", (), "list all but the N newest versions of each package per arch set (--yes: remove the published ones)"),
    ("key", (), "make an API key for publishing (key add NAME): printed once, with its config line"),
)
EPILOG = """\
Every setting is also a config file key (under `spklite:`, nested by its dots) and an environment variable
SPKLITE_<KEY> (e.g. SPKLITE_FILESYSTEM_CACHE; gosspks' GOSSPKS_<KEY> names work too).
Sources, highest first: flags, environment, config file, defaults. Durations take s/m/h/d, sizes K/M/G.
Relative paths: in flags and the environment, from the current folder; in the config file, from the config
file's folder. The config file is written on first run with the defaults (flags and environment not saved).
gosspks' --packages-cache-* and --models-cache-* flags are accepted and ignored: the index is live.
"""


# Flags ######################################################################################################


class Switch(argparse.Action):
    """`--md5` / `--no-md5` (gosspks' `--md5=false` is rewritten to these before parsing)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, not str(option_string).startswith("--no-"))


class Ignored(argparse.Action):
    """A gosspks cache flag: takes its value, says once that it has no effect."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        print(f"{PROG}: {option_string} is ignored: the index is live (no cache TTL)", file=sys.stderr)


def flag_names(setting: Setting) -> list[str]:
    """Short letters first, then the key-path flag, then gosspks' names."""
    names = [setting.flag, *setting.aliases]
    return sorted(names, key=lambda name: len(name) != 2)


def negative_flags(setting: Setting) -> list[str]:
    return ["--no-" + name[2:] for name in flag_names(setting) if name.startswith("--")]


def default_text(setting: Setting) -> str:
    if setting.meta:
        return ""
    if setting.key in config.PATHS and setting.default:
        return f" (default: <home>/{setting.default})"
    shown = setting.kind.show(setting.kind.parse(setting.default))
    if isinstance(shown, bool):
        shown = "on" if shown else "off"
    elif isinstance(shown, list):
        shown = " ".join(shown) or "none"
    return f" (default: {shown if shown != '' else 'empty'})"


def add_setting_flags(parser: argparse.ArgumentParser, prefix: str, show_help: bool) -> None:
    groups = {title: parser.add_argument_group(title) for title in config.GROUPS}
    for setting in SCHEMA:
        dest = prefix + setting.key
        text = (setting.help + default_text(setting)).replace("%", "%%") if show_help else argparse.SUPPRESS
        names = flag_names(setting)
        extra: dict[str, Any] = {"metavar": setting.kind.metavar}
        if setting.kind.shape == "bool":
            names, extra = names + negative_flags(setting), {"action": Switch, "nargs": 0}
        elif setting.kind.shape == "list":
            extra["action"] = "append"  # --keyring a.asc --keyring b.asc
        groups[setting.group].add_argument(*names, dest=dest, default=argparse.SUPPRESS, help=text, **extra)
    for name in IGNORED_FLAGS:
        parser.add_argument(name, action=Ignored, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


class CommandParser(argparse.ArgumentParser):
    """A command's parser that gets its flags when it first parses (its --help included): only one command
    runs, and building all six parsers' ~35 flags each up front was ~7% of the server's start-up."""

    def __init__(self, *args: Any, fill: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fill = fill

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:  # argparse calls it for the chosen command
        if self.fill is not None:
            fill, self.fill = self.fill, None
            fill(self)
        return super().parse_known_args(*args, **kwargs)


def add_command_flags(name: str, sub: argparse.ArgumentParser) -> None:
    add_setting_flags(sub, AFTER, show_help=name == "serve")
    if name == "config":
        formats = sub.add_mutually_exclusive_group()
        formats.add_argument(
            "-y",
            "--yaml",
            "--yml",
            dest="format",
            action="store_const",
            const="yaml",
            help="YAML, as in the config file (the default)",
        )
        formats.add_argument("-j", "--json", dest="format", action="store_const", const="json", help="JSON")
        sub.set_defaults(format="yaml")
    elif name == "check":
        sub.add_argument("files", nargs="+", metavar="FILE.spk", help="package files, or folders (every .spk under)")
        sub.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    elif name in ("yank", "unyank"):
        sub.add_argument("files", nargs="+", metavar="FILE",
                         help="package files: paths, or relative to the packages folder")
    elif name == "prune":
        sub.add_argument("--keep", type=int, required=True, metavar="N", help="versions kept per package and arch set")
        sub.add_argument("--yes", action="store_true", help="remove them (only files in the publish folder)")
        sub.add_argument("--dry-run", action="store_true", help="only list them (the default without --yes)")
    elif name == "key":
        sub.add_argument("action", choices=["add"], help="add: make a new key")
        sub.add_argument("name", metavar="NAME", help="who or what uses it (letters, digits, . _ -)")
    elif name == "doctor":
        from spklite import doctor

        doctor.add_arguments(sub)
    elif name == "mirror":
        from spklite import mirror

        mirror.add_arguments(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A small, fast Synology package server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [COMMAND] [flags]",
        allow_abbrev=False,  # --pack must not silently mean --packages
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    add_setting_flags(parser, "", show_help=True)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=CommandParser)
    for name, aliases, text in COMMANDS:
        sub = commands.add_parser(
            name,
            aliases=list(aliases),
            help=text,
            description=text,
            allow_abbrev=False,
            prog=f"{PROG} {name}",
            usage=f"{PROG} serve [flags]" if name == "serve" else None,
            epilog=None if name == "serve" else f"All settings flags work here too: see {PROG} --help.",
            fill=functools.partial(add_command_flags, name),
        )
        sub.set_defaults(command=name)
    return parser


def rewrite_switches(argv: Sequence[str]) -> list[str]:
    """gosspks (pflag) took `--md5=false`; argparse switches take no value, so say it as --md5 / --no-md5."""
    switches = {}
    for setting in SCHEMA:
        if setting.kind.shape == "bool":
            for name in flag_names(setting):
                switches[name] = (setting, negative_flags(setting)[0])
    out: list[str] = []
    for position, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[position:])
        name, equals, value = arg.partition("=")
        if equals and name in switches:
            setting, negative = switches[name]
            try:
                arg = name if config.parse_bool(value) else negative
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{setting.key}: '{value}' is not allowed: {setting.kind.allowed} (from {name})"
                ) from None
        out.append(arg)
    return out


def given_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    """{dotted key: raw value} of the flags the user gave, before or after the command."""
    given: dict[str, Any] = {}
    for setting in SCHEMA:
        before = getattr(namespace, setting.key, None)
        after = getattr(namespace, AFTER + setting.key, None)
        if setting.kind.shape == "list" and before is not None and after is not None:
            given[setting.key] = before + after
        elif after is not None or before is not None:
            given[setting.key] = after if after is not None else before
    return given


# Logging ####################################################################################################


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stderr, so a replaced stderr (tests, daemons) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


HANDLER = StderrHandler()


def to_journal() -> bool:
    """Whether stderr is systemd's journal: JOURNAL_STREAM names its stream as device:inode. A program started
    by a service with its stderr sent elsewhere (a log file) inherits the variable, and keeps its timestamps."""
    try:
        device, inode = (int(number) for number in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):  # unset or odd; stderr closed, None or not a file
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: str) -> None:
    HANDLER.setFormatter(logging.Formatter(JOURNAL_FORMAT if to_journal() else LOG_FORMAT))
    root = logging.getLogger()
    if HANDLER not in root.handlers:
        root.addHandler(HANDLER)
    root.setLevel(level.upper())


# Commands ###################################################################################################


def check(paths: Sequence[str], strict: bool) -> int:
    """`spklite check`: one verdict line per file (every .spk under a folder), warnings and the NAS it reaches
    before it; a summary line when more than one file or a folder was checked."""
    from spklite.index import printable

    status = rejected = warned = 0
    targets = [target for path in paths for target in check_targets(path)]
    for path, reason in targets:
        name = printable(path)  # a walk may find names that are not UTF-8
        warnings: list[str] = []
        reached = ""
        if not reason:
            reason, warnings, reached = verdict(path)
        for warning in warnings:
            print(f"{name}: warning: {warning}")
        if reached:
            print(f"{name}: reaches {reached}")
        if reason:
            print(f"{name}: rejected: {reason}")
            rejected += 1
            status = 1
        elif warnings:
            print(f"{name}: OK, {plural(len(warnings), 'warning')}")
            warned += 1
            status = 1 if strict else status
        else:
            print(f"{name}: OK")
    if len(targets) > 1 or any(os.path.isdir(path) for path in paths):
        print(f"{plural(len(targets), 'file')}: {rejected} rejected, {warned} with warnings")
    return status


def verdict(name: str) -> tuple[str, list[str], str]:
    """One file's (reason it is rejected or "", warnings, the NAS it reaches)."""
    from spklite import explain, spk  # the reader is only needed here

    if not os.path.exists(name):
        return "no such file", [], ""
    if not os.path.isfile(name):
        return "not a file", [], ""
    reason, warnings, package = spk.check(name)  # never raises: an unreadable file is a reason
    return reason or "", warnings, explain.reach(package) if package else ""


def check_targets(name: str) -> list[tuple[str, str]]:
    """What `check NAME` looks at, as (path, why it cannot be checked or ""): the name itself, or for a folder
    every .spk under it that the index would serve, sorted, and each folder under it that cannot be read."""
    if not os.path.isdir(name):
        return [(name, "")]
    from spklite.index import Index

    index = Index(name, os.devnull)  # its walk: iterative (any depth), loops ended, hidden entries left out
    found = [(os.path.join(name, rel), "") for rel in index.walk()]
    found += [(os.path.join(name, rel), why) for rel, why in index.unreadable.items()]
    return sorted(found) or [(name, "no .spk files in this folder")]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def key_add(name: str) -> int:
    """`spklite key add NAME`: a new API key, shown once; the config keeps only its salted hash."""
    from spklite import publish

    try:
        key, entry = publish.new_key(name)
    except ValueError as exc:
        print(f"{PROG}: key add: {exc}", file=sys.stderr)
        return 2
    print(f"API key for {name} (shown only now: keep it in your CI's secrets or spksrc's local.mk):\n\n  {key}\n")
    print("Enable it with this entry under publish.keys in the config file (it holds only a salted hash),")
    print("then restart spklite:\n")
    print(f"spklite:\n  publish:\n    keys:\n      - {entry}\n")
    print(f"or: --publish-key {entry}  (or SPKLITE_PUBLISH_KEYS, several separated by spaces)")
    return 0


def run(namespace: argparse.Namespace) -> int:
    command = getattr(namespace, "command", "serve")
    if command != "serve":
        gc.enable()  # `check` and `scan` may read thousands of files
    if command == "version":
        print(f"{PROG} {__version__}")
        return 0
    if command == "check":
        return check(namespace.files, namespace.strict)
    if command == "key":
        return key_add(namespace.name)
    if command == "doctor":
        from spklite.doctor import doctor_command

        return doctor_command(namespace, lambda: config.load(given_flags(namespace), os.environ, create_file=False))
    if command == "mirror":
        from spklite.mirror import mirror_command

        return mirror_command(namespace, lambda: config.load(given_flags(namespace), os.environ, create_file=False))
    # printing the config must not write files; serving and scanning write the first-run config file (below)
    cfg = config.load(given_flags(namespace), os.environ, create_file=command != "config")
    setup_logging(cfg["log-level"])
    if command == "config":
        if namespace.format == "yaml":
            found = "" if os.path.exists(cfg["config"]) else " (not there: defaults, flags and environment only)"
            sys.stdout.write(f"# home: {cfg['home']}\n# config file: {cfg['config']}{found}\n")
        sys.stdout.write(config.dump(cfg, namespace.format))
        return 0
    # The first-run file is written once logging is set up (its line must reach the log) and, when serving, once
    # the keyrings have been read: a start refused for a bad setting writes nothing.
    if command in ("yank", "unyank"):
        from spklite.yank import yank_command

        return yank_command(cfg, namespace.files, command == "yank")
    if command == "prune":
        from spklite.yank import prune_command

        return prune_command(cfg, namespace.keep, namespace.yes and not namespace.dry_run)
    if command == "scan":
        from spklite.index import scan_command

        config.write_first_run(cfg)
        return scan_command(cfg, sys.stdout)
    from spklite.server import serve

    return serve(cfg)


def without_openssl() -> None:
    """Import hashlib and http.client without OpenSSL, unless something has loaded them already.

    spklite makes no TLS connections, and CPython has md5 and sha256 built in; yet bottle's http.client
    (for ssl) and hmac and hashlib load libssl and libcrypto: ~4.5 MiB of a ~27 MiB server (SPEC: under 25 MB).
    Builds without the built-in hashes (FIPS) keep OpenSSL for hashlib. Only the imports made here are
    affected: `import ssl` still works afterwards.
    """
    if any(name in sys.modules for name in ("hashlib", "hmac", "http.client")):
        return  # too late: imported by the program that imported spklite (tests, say)
    from importlib.util import find_spec

    builtin_hashes = find_spec("_md5") is not None and (find_spec("_sha256") or find_spec("_sha2")) is not None
    hide = [name for name in ("ssl", "_hashlib") if name not in sys.modules and (name == "ssl" or builtin_hashes)]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError: the fallback
    try:
        import hashlib  # noqa: F401
        import hmac  # noqa: F401
        import http.client  # noqa: F401
    finally:
        for name in hide:
            del sys.modules[name]


def main(argv: Sequence[str] | None = None) -> int:
    """The `spklite` program; returns the exit status (2: bad flags or settings)."""
    # Start-up builds ~100k objects that live as long as the process (modules, the index) and little garbage:
    # the collector's passes over them took ~15 ms of a ~280 ms start. `serve` turns it back on once ready.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not {"doctor", "mirror"} & set(argv):  # they talk to https sources: their http.client needs TLS
        without_openssl()
    setup_logging("warning")  # until the config says otherwise: config file warnings must show
    try:
        args = rewrite_switches(argv)
        try:
            namespace = build_parser().parse_args(args)
        except SystemExit as exc:  # --help, or a usage error argparse has already explained
            return exc.code if isinstance(exc.code, int) else 2
        return run(namespace)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
