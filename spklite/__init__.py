"""spklite: a small, fast Synology package server."""

__version__ = "0.1.0"
__license__ = "MIT"
