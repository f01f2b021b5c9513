"""`python -m spklite` and the zipapp entry (`python spklite.pyz`): an absolute import works in both."""

from spklite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
