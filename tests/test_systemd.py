"""systemd/spklite.service: a valid unit, hardened to an exposure of at most 2.0 (SPEC 5)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "spklite.service"
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


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit() -> None:
    done = analyze("verify", str(UNIT))
    if "is not executable" in done.stderr or "No such file" in done.stderr:
        pytest.skip(f"the unit's interpreter is missing on this machine: {done.stderr.strip()}")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
def test_security_exposure_is_at_most_two() -> None:
    done = analyze("security", "--offline=true", str(UNIT))
    if done.returncode != 0 and "--offline" in done.stderr:
        pytest.skip(f"this systemd-analyze cannot rate unit files offline: {done.stderr.strip()}")
    found = re.search(r"Overall exposure level for spklite\.service:\s*([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    exposure = float(found.group(1))
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout
