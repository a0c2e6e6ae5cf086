"""A folder or file of the configuration the daemon's user may not read gives one
line naming it and how to fix it, not a traceback (an outside test found 25-33
lines of PermissionError from `check-config` and `run`). Run as the unprivileged
`nobody` through a venv that user can run (root reads everything)."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import postfix
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bin_dir():
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the connector as another user")
    found = postfix.site_venv(ROOT)
    if found is None:
        pytest.skip("no Python of this version that the user nobody can run")
    yield found
    shutil.rmtree(found.parent, ignore_errors=True)


@pytest.mark.parametrize("folder", ["config", "templates"])
@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_an_unreadable_folder_is_one_line_naming_it(bin_dir, folder, command):
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="connector-perm-"))   # pytest's tmp_path is root's alone
    site = top / "site"
    (site / "config").mkdir(parents=True)
    (site / "templates").mkdir()
    shutil.copy(ROOT / "templates" / "auto_response.txt.j2", site / "templates")
    (site / "connector.ini").write_text(f"[connector]\npublic_address = support@example.com\n"
                                        f"database = var/connector.db\n[smtp]\nlisten = 127.0.0.1:{free_port()}\n"
                                        "[outbound]\nmode = maildir\nmaildir = var/out\n")
    for path in [top, *site.rglob("*"), site]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    top.chmod(0o755)
    (site / folder).chmod(0o700)
    os.chown(site / folder, 0, 0)     # root's, mode 0700: nobody may not look inside
    result = subprocess.run(["runuser", "-u", "nobody", "--", str(bin_dir / "connector"), "-c",
                             str(site / "connector.ini"), *command], capture_output=True, text=True, timeout=60,
                            cwd="/")
    shutil.rmtree(top)
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(site / folder) in lines[0] and "ermission denied" in lines[0]


def test_status_that_cannot_read_its_ini_is_unknown_not_degraded(bin_dir):
    """A monitoring check run as a user who may not read the ini says UNKNOWN (3), not
    WARNING (1): it knows nothing of the daemon's health (outside test)."""
    top = Path(tempfile.mkdtemp(prefix="connector-perm-"))
    try:
        top.chmod(0o755)
        ini = top / "connector.ini"
        ini.write_text("[connector]\npublic_address = support@example.com\ndatabase = var/connector.db\n")
        ini.chmod(0o600)      # root's alone
        result = subprocess.run(["runuser", "-u", "nobody", "--", str(bin_dir / "connector"), "-c", str(ini),
                                 "status"], capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(top)
    assert result.returncode == 3, (result.returncode, result.stderr)
    [line] = result.stdout.strip().splitlines()   # on stdout, where a check's output is read
    assert line.startswith("CONNECTOR UNKNOWN - ") and "permission denied" in line.lower(), line
    assert "Traceback" not in result.stderr, result.stderr
