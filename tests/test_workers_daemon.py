"""`[worker] processes = N` under the real daemon: N filing children supervised like
the others (status, READY, SIGHUP, restart), each filing its own share of the spool."""

import os
import signal
import socket
import time

import pytest

from conftest import Instance, make_mail, wait_for
from health import children_running, events, status

from connector.settings import load_settings
from connector.store.wakeup import Waker, notify
from connector.worker import filing_processes

WORKERS = ("worker", "worker-2", "worker-3")


def test_a_wake_up_reaches_every_filing_worker(tmp_path):
    first, second = Waker(tmp_path, "worker"), Waker(tmp_path, "worker-2")
    try:
        notify("worker", tmp_path)
        assert first.wait(5) and second.wait(5)
    finally:
        first.close(), second.close()


def test_auto_is_one_process_and_a_count_is_taken_as_written(tmp_path):
    assert filing_processes(load_settings(Instance(tmp_path / "a", 2500).ini), cores=8) == 1
    assert filing_processes(load_settings(Instance(tmp_path / "b", 2500, worker__processes="3").ini), cores=2) == 3


def test_a_bad_count_is_one_line_naming_the_key(tmp_path):
    inst = Instance(tmp_path, 2500, worker__processes="twelve")
    result = inst.cli("check-config", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr.decode()
    assert "[worker] processes: 'twelve' is not auto or a number from 1 to 8" in result.stderr.decode()


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").split(b"\0")


@pytest.mark.sqlite_only("the partitions are SQLite's; PostgreSQL's pool of claims: test_postgres_claims.py")
def test_three_filing_workers_under_the_daemon(tmp_path, sink, monkeypatch):
    notify_path = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(notify_path))
    systemd.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    inst = Instance(tmp_path / "site", sink.port, worker__processes="3")
    try:
        inst.start()
        while b"READY=1" not in systemd.recv(4096):
            pass
        report = status(inst)[1]    # READY once every child runs, the three workers included
        assert set(report["children"]) == {*WORKERS, "deliver"}
        assert all(child["state"] == "running" for child in report["children"].values())
        pids = {name: report["children"][name]["pid"] for name in WORKERS}
        for index, name in enumerate(WORKERS, 1):
            assert cmdline(pids[name])[-3:] == [b"worker", b"--partition", f"{index}/3".encode()]

        # Each worker files its own share: with worker-2 stopped, its entry 1 waits, and the new
        # tickets after it wait too (numbers go in arrival order); the others decided them already.
        os.kill(pids["worker-2"], signal.SIGSTOP)
        for n in range(6):
            inst.send(make_mail(subject=f"Share {n}", sender=f"c{n}@acme.example"))
        time.sleep(2)
        assert [s for s in inst.spool_states() if s[1] == "done"] == []
        os.kill(pids["worker-2"], signal.SIGCONT)     # its wake-ups waited in its socket
        inst.wait_processed(6, timeout=30)
        assert [t["subject"] for t in sorted(inst.tickets(), key=lambda t: t["number"])] == \
            [f"Share {n}" for n in range(6)]

        # A dead worker is restarted and files its share again.
        os.kill(pids["worker-3"], signal.SIGKILL)
        report = wait_for(lambda: (r := children_running(inst)) and r["children"]["worker-3"]["pid"] != pids["worker-3"]
                          and r, 30, what="worker-3 restarted")
        assert report["children"]["worker-3"]["restarts"] == 1
        assert {name: report["children"][name]["pid"] for name in WORKERS[:2]} == \
            {name: pids[name] for name in WORKERS[:2]}
        for n in range(3):
            inst.send(make_mail(subject=f"After the restart {n}", sender=f"d{n}@acme.example"))
        inst.wait_processed(9, timeout=30)
        assert all(s[1] == "done" for s in inst.spool_states())
        assert len(inst.tickets()) == 9 and sorted(t["number"] for t in inst.tickets()) == list(range(1, 10))

        # SIGHUP reaches every worker.
        os.kill(inst.proc.pid, signal.SIGHUP)
        wait_for(lambda: len([e for e in events(inst, "config.reloaded") if e.get("process") == "worker"]) >= 3,
                 30, what="three workers reloaded")
    finally:
        inst.stop()
        systemd.close()


def test_a_child_started_just_before_the_daemon_died_knows_it(monkeypatch):
    """kill -9 of the daemon while a child starts: the child's parent is already init when it
    looks, so the daemon's pid comes in the environment and the orphan watch compares with it."""
    from connector.health.children import PARENT_ENV, parent_pid
    monkeypatch.setenv(PARENT_ENV, "4194999")
    assert parent_pid() == 4194999 and PARENT_ENV not in os.environ
    assert parent_pid() == os.getppid()
