"""The daemon's children: independent of the working directory, restarted with capped backoff."""

import os
import signal

from conftest import make_mail, wait_for
from health import CONSOLE_SCRIPT, children_running, events, start_from, status

from connector.health.children import RESTART_DELAY_MAX, restart_delay


def test_children_start_from_a_directory_holding_a_connector_folder(instance, tmp_path):
    """/etc holds /etc/connector: `python -m connector` there imported it, and both children died."""
    cwd = tmp_path / "etc"
    (cwd / "connector").mkdir(parents=True)
    (cwd / "connector" / "__init__.py").write_text("raise ImportError('the wrong connector package')\n")
    (cwd / "connector" / "__main__.py").write_text("raise SystemExit(3)\n")
    start_from(instance, cwd, [str(CONSOLE_SCRIPT), "-c", str(instance.ini), "run"])
    wait_for(lambda: children_running(instance), 20, interval=0.3, what="children running")
    instance.send(make_mail(subject="Printer broken"))
    instance.wait_processed(1)
    assert [t["subject"] for t in instance.tickets()] == ["Printer broken"]
    assert events(instance, "child.exited") == []


def test_a_child_that_keeps_dying_is_a_crash_loop_and_degrades_status(daemon):
    pids = set()
    for _ in range(3):
        report = wait_for(lambda: children_running(daemon), 30, interval=0.3, what="worker running again")
        pid = report["children"]["worker"]["pid"]
        assert pid not in pids
        pids.add(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: status(daemon)[1]["children"]["worker"]["pid"] != pid, 10, interval=0.3, what="worker reaped")
    loops = wait_for(lambda: events(daemon, "child.crash_loop"), 10, what="child.crash_loop")
    assert loops[0]["level"] == "error" and loops[0]["command"] == "worker"
    assert loops[0]["deaths_in_a_row"] == 3 and loops[0]["retry_in"] == restart_delay(3) == 4
    delays = [e["retry_in"] for e in events(daemon, "child.exited")]
    assert delays == [1, 2, 4]                       # doubling, not 32 restarts a minute
    code, report = status(daemon)
    assert code == 1 and report["state"] == "degraded"
    assert report["children"]["worker"]["crash_loop"] is True
    assert report["children"]["worker"]["restarts"] >= 2
    assert any("worker is crash-looping" in p for p in report["problems"])
    assert report["children"]["deliver"]["restarts"] == 0


def test_backoff_is_capped():
    delays = [restart_delay(n) for n in range(12)]
    assert delays[:4] == [1, 1, 2, 4]
    assert max(delays) == delays[-1] == RESTART_DELAY_MAX
