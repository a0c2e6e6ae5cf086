"""The daemon's background processes stop when the daemon that started them is gone, even
when it died before they first looked (real processes; the daemon's pid in their environment)."""

import os
import subprocess
import sys

from conftest import Instance
from connector.health.children import PARENT_ENV as DAEMON_PID_ENV


def test_a_child_whose_daemon_died_before_it_looked_stops(tmp_path):
    """A worker started in the idle CPU class on a busy machine may first run after a kill -9
    of its daemon: its parent is then init, and a child that remembered that parent as "the
    daemon" ran forever. Here the daemon's pid names a process that has already exited."""
    inst = Instance(tmp_path, 25)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = dict(os.environ, **{DAEMON_PID_ENV: str(gone.pid)})
    worker = subprocess.Popen([sys.executable, "-m", "connector", "-c", str(inst.ini), "worker"], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = worker.communicate(timeout=60)[0].decode()
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker kept running after its daemon was gone") from None
    assert worker.returncode == 0, output
    assert "worker.orphaned" in output
