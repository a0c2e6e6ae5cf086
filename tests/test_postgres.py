"""The daemon on PostgreSQL, end to end over real SMTP (issue 13): mail in, ticket filed,
auto-response handed to the relay; the spool a schema of the same database; ticket
numbers from a sequence; `db status|upgrade` and `check-config` on a PostgreSQL URL."""

import json

import psycopg

from conftest import Instance, make_mail, wait_for


def pg_instance(tmp_path, sink, url, **ini):
    return Instance(tmp_path, sink.port, connector__database=url, connector__data_dir="var", **ini)


def test_daemon_files_mail_into_postgresql_and_delivers(tmp_path, sink, pg_url):
    inst = pg_instance(tmp_path, sink, pg_url).start()
    try:
        for n in range(3):
            inst.send(make_mail(subject=f"Printer {n}", sender=f"ann{n}@acme.example"))
        states = inst.wait_processed(3)
        assert [row[1] for row in states] == ["done"] * 3
        tickets = inst.tickets()
        assert sorted(t["number"] for t in tickets) == [1, 2, 3]
        inst.wait_delivered()
        for n in range(3):  # each customer's auto-response went to the relay, once
            assert len(sink.to(f"ann{n}@acme.example")) == 1
    finally:
        inst.stop()
    with psycopg.connect(pg_url) as conn:
        # the spool is the schema `spool` of the same database, holding the bytes received
        raw = conn.execute('SELECT raw FROM spool.spool ORDER BY id').fetchall()
        assert len(raw) == 3 and all(b"Subject: Printer" in bytes(r[0]) for r in raw)
        assert conn.execute("SELECT last_value, is_called FROM ticket_number_seq").fetchone() == (3, True)
    assert not (tmp_path / "var" / "connector.db").exists()  # nothing went to SQLite
    assert (tmp_path / "var" / "hmac.key").exists()          # the key lives in [connector] data_dir


def test_db_status_and_upgrade_on_postgresql(tmp_path, sink, pg_url):
    inst = pg_instance(tmp_path, sink, pg_url)
    upgraded = inst.json("db", "upgrade")
    assert upgraded["pending"] == [] and upgraded["version"] == upgraded["latest"]
    status = inst.json("db", "status")
    assert status == {"version": upgraded["latest"], "latest": upgraded["latest"], "pending": []}


def test_check_config_names_an_unreachable_database_in_one_line(tmp_path, sink, postgres_server):
    from conftest import free_port
    port = free_port()  # nobody listens here
    inst = pg_instance(tmp_path, sink, f"postgresql://postgres@127.0.0.1:{port}/connector")
    result = inst.cli("check-config", check=False)
    err = result.stderr.decode()
    # a server that is away is no configuration error (`run` waits for it): one warning line
    assert result.returncode == 0, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "PostgreSQL" in line]) == 1, err
    assert f"PostgreSQL at 127.0.0.1:{port}/connector" in err and "[connector] database" in err, err
    assert "will wait for it" in err and f"check host and port in {inst.ini}" in err  # the hint


def test_check_config_names_a_missing_database(tmp_path, sink, postgres_server):
    inst = pg_instance(tmp_path, sink, postgres_server.url("no_such_db"))
    result = inst.cli("check-config", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err, err
    assert "no_such_db" in err and "does not exist" in err, err
    assert "createdb -O" in err and str(inst.ini) in err, err   # the hint, and the file it came from


def test_inject_exits_75_while_postgresql_is_unreachable(tmp_path, sink, postgres_server):
    from conftest import free_port
    inst = pg_instance(tmp_path, sink, f"postgresql://postgres@127.0.0.1:{free_port()}/connector")
    raw = make_mail().as_bytes()
    result = inst.cli("inject", "--sender", "ann@acme.example", "--recipient", "support@example.com", input=raw, check=False)
    err = result.stderr.decode()
    assert result.returncode == 75, err
    assert "could not store the message, try again later" in err and "Connection refused" in err, err


def test_json_of_a_ticket_reads_the_same_on_postgresql(tmp_path, sink, pg_url):
    inst = pg_instance(tmp_path, sink, pg_url).start()
    try:
        inst.send(make_mail(subject="Long Message-ID", message_id="<" + "x" * 400 + "@acme.example>"))
        inst.wait_processed(1)
        shown = inst.ticket(1)
        assert shown["subject"] == "Long Message-ID"
        assert json.loads(json.dumps(shown))  # plain JSON types (no Decimal, no memoryview)
    finally:
        inst.stop()


def test_node_name_on_every_log_line_and_in_connector_nodes(tmp_path, sink, pg_url):
    inst = pg_instance(tmp_path, sink, pg_url, node__name="mx1").start()
    try:
        inst.send(make_mail(subject="Which node"))
        inst.wait_processed(1)

        def listed():
            rows = inst.json("nodes")
            return rows if rows and rows[0]["holds"] == ["deliver", "worker", "deadlines", "retention"] else None
        [node] = wait_for(listed, 30, what="the node's heartbeat with its processes and the worker's leases")
        assert node["processes"] == ["deliver", "worker"] and node["timers"] == ["deadlines", "retention"]
        assert node["name"] == "mx1" and node["alive"] is True and node["version"]
        assert node["age_seconds"] < 30 and node["pid"] == inst.proc.pid
    finally:
        inst.stop()
    lines = [json.loads(line) for line in inst.log.read_text().splitlines() if line.startswith("{")]
    assert lines and all(line.get("node") == "mx1" for line in lines), \
        [line for line in lines if line.get("node") != "mx1"][:3]
    assert {"daemon.started", "worker.started", "ticket.created"} <= {line["event"] for line in lines}


def test_password_file_is_read_and_a_readable_one_is_warned_about(tmp_path, sink, postgres_server):
    """A role with a password, the server asking for it (scram): check-config and the store
    work with [connector] password_file, and fail in one line with a wrong password."""
    import os
    import uuid
    name = f"pw_{uuid.uuid4().hex[:8]}"
    postgres_server.sql(f"CREATE ROLE {name} LOGIN PASSWORD 's3cret'")
    postgres_server.sql(f"CREATE DATABASE {name} OWNER {name}")
    hba = os.path.join(postgres_server.data, "pg_hba.conf")
    original = open(hba).read()
    with open(hba, "w") as handle:  # this role by password over TCP, everyone else as before
        handle.write(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + original)
    postgres_server.sql("SELECT pg_reload_conf()")
    try:
        secret = tmp_path / "db-password"
        secret.write_text("s3cret\n")
        secret.chmod(0o644)
        url = f"postgresql://{name}@127.0.0.1:{postgres_server.port}/{name}"
        inst = pg_instance(tmp_path, sink, url, connector__password_file=str(secret))
        checked = inst.cli("check-config")
        assert b"[connector] password_file) can be read by every user" in checked.stderr
        assert inst.json("db", "upgrade")["pending"] == []
        secret.write_text("wrong\n")
        result = inst.cli("check-config", check=False)
        err = result.stderr.decode()
        assert result.returncode != 0 and "Traceback" not in err and "password authentication failed" in err, err
    finally:
        with open(hba, "w") as handle:
            handle.write(original)
        postgres_server.sql("SELECT pg_reload_conf()")


def test_the_key_and_the_data_dir_are_private_on_postgresql(tmp_path, sink, pg_url):
    """What stays on the machine with PostgreSQL, hmac.key in [connector] data_dir: 0600 in a 0700 folder."""
    import os
    os.umask(0o022)
    inst = pg_instance(tmp_path, sink, pg_url).start()
    try:
        inst.send(make_mail(subject="Private"))
        inst.wait_processed(1)
    finally:
        inst.stop()
    var = tmp_path / "var"
    assert oct((var / "hmac.key").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in var.iterdir() if p.name.endswith(".db")) == []  # no SQLite file at all


def test_a_nul_in_a_mails_text_is_filed_on_postgresql(tmp_path, sink, pg_url):
    """PostgreSQL text refuses NUL, which shunted such a mail (SQLite files it): the text
    keeps U+FFFD in its place, the raw bytes in the spool keep the NUL."""
    inst = pg_instance(tmp_path, sink, pg_url).start()
    try:
        raw = (b"From: Ann <ann@acme.example>\r\nTo: support@example.com\r\nSubject: Bad\x00byte\r\n"
               b"Message-ID: <nul-1@acme.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\nraw \x00 and encoded =00 NUL\r\n")
        inst.send(raw, sender="ann@acme.example", rcpts=["support@example.com"])
        assert [row[1] for row in inst.wait_processed(1)] == ["done"]
        ticket = inst.json("tickets", "show", "1")
        assert "\ufffd" in ticket["messages"][0]["text"] and "NUL" in ticket["messages"][0]["text"]
        inst.wait_delivered()
        assert len(sink.to("ann@acme.example")) == 1      # the auto-response went
    finally:
        inst.stop()
    with psycopg.connect(pg_url) as conn:
        assert b"raw \x00 and" in bytes(conn.execute("SELECT raw FROM spool.spool").fetchone()[0])
