"""A second daemon started by mistake on the same data directory or SQLite store (a copied
ini with another port) refuses to start in one line; the first keeps its state file, and
`connector status` keeps naming it (an outside test saw the second one take both over)."""

import subprocess
import sys

from conftest import free_port


def second_daemon(inst, tmp_path, **changes):
    """Run `connector run` on a copy of `inst`'s ini with its own port and `changes`; (exit, stderr)."""
    text = inst.ini.read_text().replace(f"127.0.0.1:{inst.port}", f"127.0.0.1:{free_port()}")
    for old, new in changes.items():
        text = text.replace(old, new)
    ini = tmp_path / "second.ini"
    ini.write_text(text)
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "run"], cwd=inst.path,
                            capture_output=True, timeout=60)
    return result.returncode, result.stderr.decode()


def test_a_second_daemon_on_the_same_data_directory_refuses_to_start(daemon, tmp_path):
    first = daemon.json("status")
    code, err = second_daemon(daemon, tmp_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "another connector daemon" in lines[0] and str(daemon.proc.pid) in lines[0], err
    assert daemon.proc.poll() is None
    assert daemon.json("status")["daemon"]["pid"] == first["daemon"]["pid"] == daemon.proc.pid


def test_a_second_daemon_with_its_own_data_directory_on_the_same_sqlite_store_refuses(daemon, tmp_path):
    database = daemon.path / "var" / "connector.db"
    code, err = second_daemon(daemon, tmp_path, **{"database = var/connector.db":
                                                   f"database = {database}\ndata_dir = {tmp_path / 'other'}"})
    assert code == 1 and "another connector daemon" in err, err
    assert daemon.proc.poll() is None
