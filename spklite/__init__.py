"""spklite: a small, fast Synology package server.

Start-up time and memory count (a Raspberry Pi, a router, the NAS itself), so the modules import little:
`typing` only for the type checker (`TYPE_CHECKING = False` then `if TYPE_CHECKING:`; it would cost every start
~5 ms and 0.5 MiB), records are namedtuples (a frozen dataclass takes ~1 ms to define), and what only some
commands or pages need (PyYAML, html, the page) is imported where it is used.
"""

__version__ = "0.1.0"
__license__ = "MIT"
