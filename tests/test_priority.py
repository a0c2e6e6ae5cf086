"""The daemon's background processes run in the idle CPU class: a worker started by hand (or
by systemd) gets there, nice 19 stands in where the class is missing, and the filing worker
and delivery of a running daemon are there while the intake is not (real processes)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import children_of, policy, wait_for
from connector.health.state import FILE as STATE_FILE

SCHED_IDLE = 5  # /proc/PID/stat's policy field for SCHED_IDLE


def test_where_the_idle_class_is_missing_the_niceness_is_19_however_often(tmp_path):
    """A kernel without SCHED_IDLE (here: the call removed from `os`, as on such a platform)."""
    code = ("import os; del os.sched_setscheduler\n"
            "from connector.priority import background\n"
            "background(); background(); print(os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["19"], out.stdout + out.stderr


def test_a_worker_started_by_hand_goes_idle(instance):
    """`connector deliver` as systemd or a sysadmin runs it, without the daemon's bootstrap."""
    proc = subprocess.Popen([sys.executable, "-m", "connector", "-c", str(instance.ini), "deliver"],
                            cwd=instance.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: policy(proc.pid) == SCHED_IDLE, 30, what="the delivery process to go idle")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_filing_worker_and_delivery_of_a_running_daemon_are_idle(daemon):
    def ready():  # both children said they run (a child just forked is still the daemon's copy)
        return any(json.loads(path.read_text()).get("ready") for path in daemon.path.rglob(STATE_FILE))
    wait_for(ready, 20, what="the worker and delivery to start")
    roles = {role: policy(pid) for pid, role in children_of(daemon.proc.pid).items()}
    assert roles == {"worker": SCHED_IDLE, "deliver": SCHED_IDLE}
    assert policy(daemon.proc.pid) == 0  # the intake itself in the normal class
