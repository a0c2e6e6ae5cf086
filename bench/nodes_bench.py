"""Several nodes on one PostgreSQL (issue 13): throughput, CPU and round trips, in one run.

One private PostgreSQL (tests/pg.py, with pg_stat_statements) and, in the same
run and with the same load: the no-op aiosmtpd sink (the ceiling), 1, 2 and 3
connector nodes on PostgreSQL (each a `connector run` daemon with its own port,
data_dir and `[node] name`, a fresh database per configuration), and one node
on SQLite (bench/smtp_bench.py's run). The load is Postfix's smtp-source, N
messages of SIZE bytes, split evenly over the nodes' ports (one smtp-source per
node, SESSIONS divided among them, all started at once); the relay is Postfix's
smtp-sink. Printed per configuration:

  acceptance   messages/s until every smtp-source got its 250s, and the ratio to the sink
  end to end   messages/s until every message is filed and every outgoing mail
               (auto-response + distribution) handed to the relay
  CPU          milliseconds per message of each process kind, all nodes together
               (intake, worker, deliver) and of the PostgreSQL server (postmaster
               and every backend, those that exited included)
  round trips  statements per filed message (pg_stat_statements: every statement
               the nodes sent, BEGIN/COMMIT included; the bench's own few progress
               queries subtracted), transactions per message (pg_stat_database),
               and the server's execution time per message (waits for locks
               included); beside it the mean
               time of one round trip on loopback (`SELECT 1`, measured here), so
               statements x round trip is what the nodes wait for the server.

On this 2-core machine the nodes, the server, smtp-source and smtp-sink all
share the two cores: more nodes show the cost of sharing one database (more
processes, more connections, more lock waits), not a speed-up. Progress is read
with index lookups twice a second, never by counting tables.

    python bench/nodes_bench.py [--messages 5000] [--sessions 20] [--size 4096] [--nodes 1,2,3] [--no-sqlite]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from smtp_bench import (  # noqa: E402
    CPU, SMTP_SINK, SMTP_SOURCE, Progress, cpu_seconds, free_port, processes, run_connector, run_sink, wait_port,
    write_config)
import pg  # noqa: E402  (tests/pg.py: a private PostgreSQL)

DRAIN_LIMIT = 900  # seconds: give up on a configuration whose backlog does not drain
PROGRESS_QUERIES = 4  # statements one `Progress.drained` sends
RTT_SAMPLES = 2000


class PgProgress(Progress):
    """smtp_bench's drain check (index lookups only), on a PostgreSQL store."""

    def __init__(self, url):
        import psycopg
        self.conn = psycopg.connect(url, autocommit=True)
        self.floor = 0
        self.queries = 0

    def one(self, sql, *params):
        self.queries += 1
        row = self.conn.execute(sql.replace("?", "%s"), params).fetchone()
        return row[0] if row and row[0] is not None else 0


class Server(pg.PostgresServer):
    """The private server, with pg_stat_statements loaded."""

    def __init__(self):
        super().__init__()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n")

    def start(self):
        super().start()
        self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self

    def cpu(self):
        """CPU seconds of the postmaster and all its children so far (reaped ones included)."""
        pid = int(open(os.path.join(self.data, "postmaster.pid")).readline())
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return cpu_seconds(pid) + reaped + sum(cpu_seconds(int(child)) for child in children)

    def counters(self, database):
        """(statements, server execution ms, transactions) of `database` so far."""
        statements, exec_ms = self.sql(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
            f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{database}')")[0]
        [(transactions,)] = self.sql(f"SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                     f"WHERE datname = '{database}'")
        return int(statements), float(exec_ms), int(transactions)

    def round_trip_ms(self, samples=RTT_SAMPLES):
        """The mean time of one `SELECT 1` round trip over loopback TCP."""
        import psycopg
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("SELECT 1")
            start = time.perf_counter()
            for _ in range(samples):
                conn.execute("SELECT 1").fetchone()
            return 1000 * (time.perf_counter() - start) / samples


def node_config(workdir, index, url, relay_port, args):
    """smtp_bench's configuration, on PostgreSQL, as node `index`: its own data_dir and
    `[node] name` (which, with the URL, names its wake-up sockets), the URL with its
    application_name (pg_stat_activity shows which node a connection is)."""
    port = free_port()
    write_config(workdir, port, relay_port, args.python, args.workers)
    ini = workdir / "connector.ini"
    text = ini.read_text().replace("database = var/connector.db\n",
                                   f"database = {url}?application_name=node{index}\ndata_dir = var\n")
    ini.write_text(text + f"[node]\nname = node{index}\n")
    return port


def spread_source(ports, args):
    """One smtp-source per port, started together, the messages and sessions split evenly;
    the seconds until the last one finished."""
    count = len(ports)
    shares = [args.messages // count + (1 if i < args.messages % count else 0) for i in range(count)]
    start = time.perf_counter()
    sources = [subprocess.Popen([SMTP_SOURCE, "-s", str(max(1, args.sessions // count)), "-m", str(share),
                                 "-l", str(args.size), "-f", "a@client.test", "-t", "support@example.test",
                                 f"127.0.0.1:{port}"]) for port, share in zip(ports, shares)]
    for source in sources:
        if source.wait() != 0:
            raise SystemExit(f"smtp-source exited with {source.returncode}")
    return time.perf_counter() - start


def run_nodes(args, server, count, root):
    """`count` nodes on a fresh database: acceptance, end to end, CPU, statements."""
    url = server.new_database()
    database = url.rpartition("/")[2]
    relay_port = free_port()
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{relay_port}", "256"])
    daemons, ports = [], []
    try:
        wait_port(relay_port, sink)
        for index in range(1, count + 1):
            workdir = root / f"node{index}"
            ports.append(node_config(workdir, index, url, relay_port, args))
            daemons.append(subprocess.Popen([args.python, "-m", "connector", "-c", str(workdir / "connector.ini"),
                                             "run"], stdout=open(workdir / "daemon.log", "wb"),
                                            stderr=subprocess.STDOUT, cwd=workdir))
        for port, daemon in zip(ports, daemons):
            wait_port(port, daemon)
            deadline = time.monotonic() + 30
            while not {"worker", "deliver"} <= set(processes(daemon.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(1.0)  # every node's first polls and heartbeat are out of the way
        cpus = [CPU(daemon.pid) for daemon in daemons]
        server_before, counters_before = server.cpu(), server.counters(database)
        start = time.perf_counter()
        accept = spread_source(ports, args)
        progress = PgProgress(url)
        while True:
            done, total, filed, sent = progress.drained(args.messages, 2 * args.messages)
            if done:
                break
            if time.perf_counter() - start > DRAIN_LIMIT:
                raise SystemExit(f"{count} nodes: backlog did not drain: {total} spooled, {filed} filed, "
                                 f"{sent} outgoing written")
            time.sleep(0.5)
        end_to_end = time.perf_counter() - start
        server_cpu = server.cpu() - server_before
        statements, exec_ms, transactions = (after - before for after, before in
                                             zip(server.counters(database), counters_before))
        statements -= progress.queries
        progress.conn.close()
        cpu = {}
        for node_cpu in cpus:
            for role, ms in node_cpu.stop(args.messages).items():
                kind = "worker" if role.startswith("worker") else role
                cpu[kind] = cpu.get(kind, 0.0) + ms
        cpu["postgres"] = 1000 * server_cpu / args.messages
        return {"accept": accept, "e2e": end_to_end, "filed": total, "sent": sent, "cpu": cpu,
                "statements": statements / args.messages, "transactions": transactions / args.messages,
                "exec_ms": exec_ms / args.messages}
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait()
        sink.terminate()
        sink.wait()


def line(label, row, sink_rate, messages):
    accept, e2e = messages / row["accept"], messages / row["e2e"]
    cpu = ", ".join(f"{kind} {ms:.2f}" for kind, ms in sorted(row["cpu"].items()))
    text = (f"  {label:<16} accepts {accept:5.0f} msg/s (ratio {accept / sink_rate:.2f}) | end to end "
            f"{e2e:4.0f} msg/s ({row['filed']} filed, {row['sent']} outgoing) | CPU ms/msg: {cpu}")
    if "statements" in row:
        text += (f"\n  {'':<16} per message: {row['statements']:.1f} statements, {row['transactions']:.1f} "
                 f"transactions, {row['exec_ms']:.2f} ms executing in the server")
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--nodes", default="1,2,3", help="the node counts measured on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="leave out the one-node SQLite run")
    parser.add_argument("--workers", help="[worker] processes of each node (default: the connector's)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose connector is measured")
    args = parser.parse_args()
    args.python = str(Path(args.python).absolute())
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is missing: run tests/install-system-deps.sh (Postfix) first")
    reason = pg.available()
    if reason:
        raise SystemExit(f"no private PostgreSQL here: {reason}")
    load_before = open("/proc/loadavg").read().split()[:3]
    server = Server().start()
    root = Path(tempfile.mkdtemp(prefix="connector-nodes-bench-"))
    try:
        rtt = server.round_trip_ms()
        sink_time, sink_cpu = run_sink(args)
        sink_rate = args.messages / sink_time
        rows = []
        for count in (int(n) for n in args.nodes.split(",")):
            rows.append((f"{count} node{'s' if count > 1 else ''}, PG", run_nodes(args, server, count, root / f"pg{count}")))
            print(line(*rows[-1], sink_rate, args.messages), flush=True)
        if not args.no_sqlite:
            workdir = root / "sqlite"
            workdir.mkdir()
            accept, e2e, total, sent, cpu = run_connector(args, workdir)
            rows.append(("1 node, SQLite", {"accept": accept, "e2e": e2e, "filed": total, "sent": sent, "cpu": cpu}))
            print(line(*rows[-1], sink_rate, args.messages), flush=True)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"\n{args.messages} messages of {args.size} bytes over {args.sessions} sessions (split over the nodes); "
          f"load average {' '.join(load_before)} before, {' '.join(load_after)} after")
    print(f"  no-op sink       accepts {sink_rate:5.0f} msg/s, CPU {sink_cpu:.2f} ms/msg")
    for label, row in rows:
        print(line(label, row, sink_rate, args.messages))
    print(f"  one PostgreSQL round trip on loopback (SELECT 1, mean of {RTT_SAMPLES}): {rtt:.3f} ms")
    for label, row in rows:
        if "statements" in row:
            print(f"  {label}: {row['statements']:.1f} statements x {rtt:.3f} ms = {row['statements'] * rtt:.2f} ms "
                  f"of round trips per message")
    print("  (on 2 cores more nodes show the overhead of sharing one database, not a speed-up)")


if __name__ == "__main__":
    main()
