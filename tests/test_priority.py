"""The daemon's background processes are in the idle CPU class from their first instruction
on: a child is already there when its bootstrap imports the command line, and the filing
worker and delivery of a running daemon stay there (real processes)."""

import json
import os
import subprocess
from pathlib import Path

from conftest import wait_for
from connector.health.children import child_argv
from connector.health.state import FILE as STATE_FILE

SCHED_IDLE = 5  # /proc/PID/stat's policy field for SCHED_IDLE


def test_a_child_is_in_the_idle_class_before_it_imports_the_command_line(tmp_path):
    """An audit hook sees the import of `connector.cli` in a child's bootstrap and prints the
    process's CPU class at that moment: the imports that follow run idle, not beside the intake."""
    argv = child_argv(tmp_path / "connector.ini", ("--version",))
    code = argv[argv.index("-c") + 1]
    hook = ("import os, sys\n"
            "def hook(event, args):\n"
            "    if event == 'import' and args[0] == 'connector.cli':\n"
            "        print('class', os.sched_getscheduler(0), flush=True); os._exit(0)\n"
            "sys.addaudithook(hook)\n")
    out = subprocess.run([argv[0], "-P", "-c", hook + code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.stdout.split() == ["class", str(os.SCHED_IDLE)], out.stdout + out.stderr


def policy(pid):
    """The scheduling policy of a process's main thread, from /proc (field 41 of stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[38])


def test_the_filing_worker_and_delivery_of_a_running_daemon_are_idle(daemon):
    def ready():  # both children said they run (a child just forked is still the daemon's copy)
        return any(json.loads(path.read_text() or "{}").get("ready") for path in daemon.path.rglob(STATE_FILE))
    wait_for(ready, 20, what="the worker and delivery to start")
    pids = [int(pid) for pid in Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text().split()]
    roles = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode(): policy(pid) for pid in pids}
    assert roles == {"worker": SCHED_IDLE, "deliver": SCHED_IDLE}
    assert policy(daemon.proc.pid) == 0  # the intake itself in the normal class
