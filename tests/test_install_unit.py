"""systemd/connector.service: valid for systemd, sandboxed (exposure <= 3.0), and
fitting the daemon: Type=notify, watchdog, reload by SIGHUP, files 0600."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

UNIT = ROOT / "systemd" / "connector.service"
MAX_EXPOSURE = 3.0
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives():
    found = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def unit_here(tmp_path):
    """The unit with ExecStart pointing at this venv's connector (verify wants an executable)."""
    connector = Path(sys.executable).with_name("connector")
    path = tmp_path / "connector.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/connector", str(connector)))
    return path


def test_unit_fits_the_daemon_and_the_layout():
    d = directives()
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["WatchdogSec"] == ["30"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["UMask"] == ["0077"] and d["StateDirectory"] == ["connector"]
    assert d["User"] == ["connector"] and d["ProtectSystem"] == ["strict"]
    assert d["Environment"] == ["CONNECTOR_CONFIG=/etc/connector/connector.ini"]
    assert "/etc/connector/connector.ini" in (ROOT / "connector.ini.example").read_text()
    assert "/var/lib/connector/connector.db" in (ROOT / "connector.ini.example").read_text()


@needs_systemd
def test_systemd_analyze_verify_passes(unit_here):
    result = subprocess.run([ANALYZE, "verify", str(unit_here)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_systemd
def test_exposure_is_at_most_3(unit_here):
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit_here)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for connector\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE
