"""SMTP throughput: the connector against a no-op aiosmtpd sink, in the same run.

For each round, the same smtp-source command (Postfix's C load generator)
sends N messages over S sessions to the no-op sink (the ceiling), to a
connector that only accepts (`run --no-worker`), and to a fresh connector
daemon whose relay is Postfix's smtp-sink. Printed:
  acceptance   messages/s accepted (250 after the spool commit) and the ratio
               to the sink: alone, and while the worker files the same burst
               on the other core
  end to end   messages/s from the first SMTP connection until every message
               is filed and every outgoing mail (distribution + auto-response)
               was written and none is pending: the backlog drained
  CPU          milliseconds of CPU (user + system) per message of each process:
               the sink, the intake alone, and intake, worker and deliver end to
               end. Unlike the rates, these hold on a machine others load (the
               worker and delivery run in the idle class: any other process
               delays them, so end to end falls with the load average).
Targets (issue 14, this 2-core machine class): acceptance while filing >= 0.9 of the
sink, end to end >= 500 msg/s.

    python bench/smtp_bench.py [--messages 5000] [--sessions 20] [--size 4096] [--rounds 2] [--workers N]
"""

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
STAFF = "staff:\n  - name: Dana Desk\n    emails: [dana@example.test]\n    receive: all\n"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def wait_ready(workdir, daemon, timeout=10):
    """Wait until the daemon in `workdir` says it is ready (its children run: what systemd's
    READY=1 says), so the load meets the steady state, not the start-up; False after `timeout`
    (a checkout before the state file's `ready`, or a daemon that never got there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"{' '.join(map(str, daemon.args))} exited with {daemon.returncode}")
        for path in workdir.rglob("daemon-status.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(state, dict) and state.get("ready"):
                return True
        time.sleep(0.05)
    print(f"the daemon in {workdir} did not say it is ready within {timeout} s; measuring anyway", flush=True)
    return False


def cpu_seconds(pid):
    """utime + stime of a process so far (load-proof, unlike wall time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def role_of(argv):
    """A child's name from its command line: deliver, worker, or worker-I for `worker --partition I/N`."""
    if "--partition" in argv:
        index = argv[argv.index("--partition") + 1].partition("/")[0]
        return "worker" if index == "1" else f"worker-{index}"
    return argv[-1]


def processes(daemon_pid):
    """{role: pid} of the daemon (intake) and its children (worker, worker-2..., deliver)."""
    found = {"intake": daemon_pid}
    try:
        children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in map(int, children):
        try:
            role = role_of(Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0"))
        except OSError:
            continue
        found[role] = pid
    return found


class CPU:
    """CPU seconds each process spends between start() and stop()."""

    def __init__(self, daemon_pid):
        self.pids = processes(daemon_pid)
        self.before = {role: cpu_seconds(pid) for role, pid in self.pids.items()}

    def stop(self, messages):
        """{role: CPU milliseconds per message}; `workers`: all filing workers together."""
        used = {role: 1000 * (cpu_seconds(pid) - self.before[role]) / messages for role, pid in self.pids.items()}
        workers = [ms for role, ms in used.items() if role.startswith("worker")]
        if len(workers) > 1:
            used["workers"] = sum(workers)
        return used


def source(port, args):
    cmd = [SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
           "-f", "a@client.test", "-t", "support@example.test", f"127.0.0.1:{port}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def timed_server(cmd, port, args, cwd):
    """Start a server, time smtp-source against it, stop it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait_port(port, proc)
        before = cpu_seconds(proc.pid)
        elapsed = source(port, args)
        return elapsed, 1000 * (cpu_seconds(proc.pid) - before) / args.messages
    finally:
        proc.terminate()
        proc.wait()


def run_sink(args):
    port = free_port()
    return timed_server([sys.executable, str(ROOT / "bench" / "noop_sink.py"), str(port)], port, args, ROOT)


class Progress:
    """Whether the backlog drained, asked with index lookups only, a few times a second:
    counting whole tables every 50 ms would load the system this measures."""

    def __init__(self, db):
        self.conn = sqlite3.connect(db, timeout=30)
        self.conn.execute(f"attach database '{db.with_name(db.stem + '-spool.db')}' as spool")
        self.floor = 0  # every spool id up to it is filed

    def one(self, sql, *params):
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row and row[0] is not None else 0

    def drained(self, messages, outgoing):
        spooled = self.one("select max(id) from spool.spool")
        first_unfiled = self.one("select s.id from spool.spool s left join processing p on p.spool_id = s.id "
                                 "where s.id > ? and p.spool_id is null order by s.id limit 1", self.floor)
        self.floor = first_unfiled - 1 if first_unfiled else spooled
        written = self.one("select max(id) from outbox")
        pending = self.one("select 1 from outbox where status = 'pending' limit 1")
        done = spooled >= messages and self.floor >= spooled and written >= outgoing and not pending
        return done, spooled, self.floor, written

    def close(self):
        self.conn.close()


# smtp-source sends everything from one address: lift the auto-response limits so every
# message still gets its auto-response (two outgoing mails per message).
LIMITS = ("auto_responses_per_hour", "auto_responses_per_domain_per_hour", "auto_responses_total_per_hour")
_KNOWN = {}


def known_keys(python):
    """The ini keys the connector run by `python` knows (an older checkout knows fewer)."""
    if python not in _KNOWN:
        text = subprocess.run([python, "-m", "connector", "example-config"], capture_output=True, text=True,
                              cwd="/").stdout
        _KNOWN[python] = {line.partition(" =")[0] for line in text.splitlines() if " =" in line}
    return _KNOWN[python]


def write_config(workdir, port, relay_port, python=sys.executable, workers=None):
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "staff.yaml").write_text(STAFF)
    limits = "".join(f"{key} = 1000000\n" for key in LIMITS if key in known_keys(python))
    if workers and "processes" in known_keys(python):  # [worker] processes: a checkout before it has one
        limits += f"[worker]\nprocesses = {workers}\n"
    (workdir / "connector.ini").write_text(
        "[connector]\npublic_address = support@example.test\nnotifications_address = notify@example.test\n"
        "database = var/connector.db\n" + limits +
        f"[smtp]\nlisten = 127.0.0.1:{port}\n"
        f"[outbound]\nmode = smtp\nrelay = 127.0.0.1:{relay_port}\n")


def run_intake_only(args, workdir):
    """Acceptance with nothing processed meanwhile (`connector run --no-worker`)."""
    port = free_port()
    write_config(workdir, port, free_port(), args.python)
    return timed_server([args.python, "-m", "connector", "-c", str(workdir / "connector.ini"), "run",
                         "--no-worker"], port, args, workdir)


def run_connector(args, workdir):
    relay_port, port = free_port(), free_port()
    write_config(workdir, port, relay_port, args.python, args.workers)
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{relay_port}", "256"])
    daemon = subprocess.Popen([args.python, "-m", "connector", "-c", str(workdir / "connector.ini"), "run"],
                              stdout=open(workdir / "daemon.log", "wb"), stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_port(relay_port, sink)
        wait_port(port, daemon)
        deadline = time.monotonic() + 20
        while not {"worker", "deliver"} <= set(processes(daemon.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_ready(workdir, daemon)
        cpu = CPU(daemon.pid)
        start = time.perf_counter()
        accept = source(port, args)
        progress = Progress(workdir / "var" / "connector.db")
        while True:
            done, total, filed, sent = progress.drained(args.messages, 2 * args.messages)
            if done:
                break
            if time.perf_counter() - start > 600:
                raise SystemExit(f"backlog did not drain: {total} spooled, {filed} filed, {sent} outgoing written")
            time.sleep(0.2)
        end_to_end = time.perf_counter() - start
        progress.close()
        return accept, end_to_end, total, sent, cpu.stop(args.messages)
    finally:
        daemon.terminate()
        daemon.wait()
        sink.terminate()
        sink.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", help="[worker] processes (default: the connector's own default)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose installed connector is measured (another checkout's "
                             ".venv/bin/python, for a before/after in the same run)")
    args = parser.parse_args()
    args.python = str(Path(args.python).absolute())
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is missing: run tests/install-system-deps.sh (Postfix) first")
    rows = []
    for index in range(args.rounds):
        sink_time, sink_cpu = run_sink(args)
        workdirs = [Path(tempfile.mkdtemp(prefix="connector-bench-")) for _ in range(2)]
        try:
            alone, alone_cpu = run_intake_only(args, workdirs[0])
            accept, e2e, total, sent, cpu = run_connector(args, workdirs[1])
        finally:
            for workdir in workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
        sink_rate, alone_rate = args.messages / sink_time, args.messages / alone
        accept_rate, e2e_rate = args.messages / accept, args.messages / e2e
        rows.append((alone_rate / sink_rate, accept_rate / sink_rate, e2e_rate))
        print(f"round {index + 1}: no-op sink {sink_rate:5.0f} msg/s | connector accepts {alone_rate:5.0f} msg/s "
              f"alone (ratio {alone_rate / sink_rate:.2f}), {accept_rate:5.0f} msg/s while filing "
              f"(ratio {accept_rate / sink_rate:.2f}) | end to end {e2e_rate:4.0f} msg/s "
              f"({total} filed, {sent} outgoing)", flush=True)
        print(f"         CPU ms per message: sink {sink_cpu:.2f}, intake alone {alone_cpu:.2f}; end to end: "
              + ", ".join(f"{role} {ms:.2f}" for role, ms in sorted(cpu.items())), flush=True)
    print(f"\n{args.messages} messages of {args.size} bytes over {args.sessions} sessions, "
          f"median of {args.rounds} rounds:")
    print(f"  acceptance / no-op sink, nothing else running: {statistics.median(r[0] for r in rows):.2f}")
    print(f"  acceptance / no-op sink, worker filing at once: {statistics.median(r[1] for r in rows):.2f}"
          "   (target >= 0.90)")
    print(f"  end to end: {statistics.median(r[2] for r in rows):.0f} msg/s   (target >= 500)")


if __name__ == "__main__":
    main()
