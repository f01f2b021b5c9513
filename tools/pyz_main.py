"""spklite.pyz's __main__: the zipapp starts from compiled bytecode, like an installed spklite.

Python never keeps the bytecode of what it imports from a zip, so every start compiled spklite, bottle,
waitress and PyYAML again (2-3x the start-up of an installed spklite). The first start therefore extracts
the archive into spklite's cache, into a folder named by the archive's content and the Python version
(<cache>/pyz-<content>-cpython-313), and puts that folder first on sys.path: Python compiles each module
there once and imports the bytecode ever after. A cache that cannot be written costs only the speed: the
modules are imported from the zip, as before. tools/build_pyz.py fills in CONTENT.
"""

import os
import sys

if sys.version_info < (3, 9):  # before anything newer: an old Python prints this instead of a SyntaxError
    sys.exit("spklite needs Python 3.9 or newer; this is Python %d.%d" % sys.version_info[:2])

CONTENT = "@CONTENT@"  # the start of the SHA-256 of everything in the archive but this file
COMPLETE = ".complete"  # written last: a folder without it is not ours or not finished
NOT_EXTRACTED = ("__main__.py", "licenses/")


# config.py's flags and variables for the two settings that place the cache
FLAGS = {"--cache": "cache", "--filesystem-cache": "cache", "--home": "home", "-H": "home"}
VARIABLES = (("cache", "SPKLITE_FILESYSTEM_CACHE"), ("cache", "GOSSPKS_FILESYSTEM_CACHE"),
             ("home", "SPKLITE_HOME"), ("home", "GOSSPKS_HOME"))


def cache_folder(argv, environ):
    """spklite's cache folder as the command line or the environment name it (as config.load does), else
    <home>/cache. A cache set only in the config file is not seen: reading that file needs spklite."""
    found = {}
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        name, equals, value = arg.partition("=")
        if name in FLAGS:
            found[FLAGS[name]] = value if equals else next(args, "")
        elif arg.startswith("-H"):  # -Hfolder
            found["home"] = arg[2:]
    for key, variable in VARIABLES:
        if key not in found and environ.get(variable):  # an empty variable counts as unset
            found[key] = environ[variable]
    if found.get("cache"):
        return os.path.abspath(os.path.expanduser(found["cache"]))
    home = found.get("home") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), "spklite")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "cache")


def extracted(archive, cache):
    """The folder of the archive's modules under `cache`, extracted now if need be; None when it cannot be."""
    if not sys.implementation.cache_tag:  # this Python keeps no bytecode
        return None
    name = "pyz-%s-%s" % (CONTENT, sys.implementation.cache_tag)
    folder = os.path.join(cache, name)
    try:
        with open(os.path.join(folder, COMPLETE)) as stream:
            if stream.read() == name:
                return folder
    except OSError:
        pass
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        return None
    if not os.access(cache, os.W_OK):
        return None
    import shutil
    import zipfile

    temporary = os.path.join(cache, ".%s.%d.tmp" % (name, os.getpid()))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(temporary, [n for n in zipped.namelist() if not n.startswith(NOT_EXTRACTED)])
        with open(os.path.join(temporary, COMPLETE), "w") as stream:
            stream.write(name)
        os.rename(temporary, folder)  # atomic; fails when a concurrent start was first: its folder is as good
    except Exception:  # whatever went wrong, spklite still runs: from the zip
        shutil.rmtree(temporary, ignore_errors=True)
        return folder if os.path.isfile(os.path.join(folder, COMPLETE)) else None
    for old in os.listdir(cache):  # what older archives extracted
        if old.startswith(("pyz-", ".pyz-")) and CONTENT not in old:
            shutil.rmtree(os.path.join(cache, old), ignore_errors=True)
    return folder


def main():
    archive = os.path.dirname(__file__)
    folder = extracted(archive, cache_folder(sys.argv[1:], os.environ)) if os.path.isfile(archive) else None
    if folder:
        sys.path.insert(0, folder)
    from spklite.cli import main as spklite

    return spklite()


if __name__ == "__main__":
    sys.exit(main())
