"""Logs: JSON lines when stdout is not a terminal, readable lines when it is;
one event per decision with a stable name and the message ids bound."""

import json
import os
import pty
import subprocess
import sys
import time

from conftest import make_mail


def test_json_lines_with_stable_event_names(daemon, sink):
    daemon.send(make_mail(subject="Logged", message_id="<logged@acme.example>"))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    events = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")]
    names = {e["event"] for e in events}
    assert {"daemon.started", "intake.accepted", "ticket.created", "outbox.sent"} <= names
    created = next(e for e in events if e["event"] == "ticket.created")
    assert created["message_id"] == "<logged@acme.example>" and created["spool_id"] == 1
    assert created["action"] == "new_ticket" and created["ticket"] == 1 and created["level"] == "info"
    # the message id on every line about a message: intake and delivery too
    accepted = next(e for e in events if e["event"] == "intake.accepted")
    assert accepted["message_id"] == "<logged@acme.example>"
    sent = [e for e in events if e["event"] == "outbox.sent"]
    assert sent and all(e["message_id"].startswith("<t1.") for e in sent)


def test_readable_lines_on_a_terminal(instance):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "connector", "-c", str(instance.ini), "run"],
                            stdout=secondary, stderr=secondary, cwd=instance.path, start_new_session=True)
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 15
    try:
        while b"daemon.started" not in output and time.monotonic() < deadline:
            try:
                output += os.read(primary, 4096)
            except OSError:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(primary)
    line = next(line for line in output.decode().splitlines() if "daemon.started" in line)
    assert not line.lstrip().startswith("{")                 # not JSON
    assert "[info" in line and "listen=" in line


def test_a_log_stream_closed_meanwhile_does_not_break_logging(capsys):
    """Commands bind the log to the stderr of their time; a stream closed since (a test's
    capture, a terminal gone) must not make the next log line raise in the middle of filing."""
    import io

    from connector.log import get_logger, setup_logging
    gone = io.StringIO()
    setup_logging("info", stream=gone, json=True)
    gone.close()
    get_logger("test").info("test.after_close", value=1)
    assert '"event": "test.after_close"' in capsys.readouterr().out
    setup_logging("info")
