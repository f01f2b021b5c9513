#!/bin/sh
# spklite command line: the zipapp run by the system Python, isolated from site-packages.
exec /usr/bin/python3 -I /usr/share/spklite/spklite.pyz "$@"
