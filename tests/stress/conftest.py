"""Registers the `stress` marker and prints the figures each stress test reports."""

from __future__ import annotations

from typing import Dict, List

import pytest

FIGURES: Dict[str, List[str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stress: long hostile-world tests (fuzzing, faults, load); run with -m stress")


@pytest.fixture
def figures(request: pytest.FixtureRequest):
    """figures(text): a line for the end-of-run summary, under this test's name."""
    lines = FIGURES.setdefault(request.node.name, [])
    return lines.append


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("stress figures")
        for name, lines in FIGURES.items():
            for line in lines:
                terminalreporter.write_line(f"{name}: {line}")
