"""systemd/: spklite.service and the mirror's service and timer, valid units hardened to an exposure of at most
2.0 (SPEC 5)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "spklite.service"
MIRROR = UNIT.parent / "spklite-mirror.service"
TIMER = UNIT.parent / "spklite-mirror.timer"
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(not ANALYZE, reason="systemd-analyze not installed (Debian package: systemd)")


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANALYZE), *args], capture_output=True, text=True, timeout=60)


def settings(unit: Path = UNIT) -> dict:
    """Key -> list of values of the unit file (comments and sections dropped)."""
    found: dict = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_runs_the_pyz_as_a_dynamic_user_on_a_read_only_system() -> None:
    unit = settings()
    assert unit["Type"] == ["exec"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StateDirectory"] == ["spklite"] and unit["CacheDirectory"] == ["spklite"]
    assert unit["ProtectSystem"] == ["strict"]  # the packages folder (and all but state/cache) is read-only
    assert "spklite.pyz serve" in unit["ExecStart"][0]
    environment = dict(e.split("=", 1) for e in unit["Environment"])
    assert environment["SPKLITE_HOME"] == "%S/spklite"
    assert environment["SPKLITE_FILESYSTEM_CACHE"] == "%C/spklite"
    assert environment["SPKLITE_FILESYSTEM_PACKAGES"] == "/srv/spklite/packages"


def test_mirror_unit_runs_the_mirror_command_and_writes_only_the_mirror_folder() -> None:
    from spklite.cli import build_parser

    unit = settings(MIRROR)
    assert unit["Type"] == ["oneshot"]
    assert unit["ExecStart"][0].endswith("spklite.pyz mirror $MIRROR_SOURCE $MIRROR_UNITS")
    environment = dict(e.strip('"').split("=", 1) for e in unit["Environment"])
    assert environment["SPKLITE_FILESYSTEM_PACKAGES"] == "/srv/spklite/packages"  # the folder spklite.service serves
    assert unit["ProtectSystem"] == ["strict"] and unit["ReadWritePaths"] == ["/srv/spklite/packages/mirror"]
    assert unit["UMask"] == ["0022"]  # spklite.service, another user, reads what it writes
    # systemd gives each word of $MIRROR_UNITS as an argument: the default is a valid command line
    words = environment["MIRROR_UNITS"].split()
    namespace = build_parser().parse_args(["mirror", environment["MIRROR_SOURCE"], *words])
    assert (namespace.command, namespace.model, namespace.dsm) == ("mirror", ["DS920+"], ["7.2"])
    timer = settings(TIMER)
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"] and timer["WantedBy"] == ["timers.target"]


@needs_analyze
@pytest.mark.parametrize("units", [[UNIT], [MIRROR, TIMER]], ids=["spklite", "mirror"])
def test_systemd_analyze_verify_accepts_the_unit(units: list) -> None:
    done = analyze("verify", *map(str, units))
    if "is not executable" in done.stderr or "No such file" in done.stderr:
        pytest.skip(f"the unit's interpreter is missing on this machine: {done.stderr.strip()}")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, MIRROR], ids=["spklite", "mirror"])
def test_security_exposure_is_at_most_two(unit: Path) -> None:
    done = analyze("security", "--offline=true", str(unit))
    if done.returncode != 0 and "--offline" in done.stderr:
        pytest.skip(f"this systemd-analyze cannot rate unit files offline: {done.stderr.strip()}")
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}:\s*([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    exposure = float(found.group(1))
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout
