"""Restart-only keys are a flag on their declaration (settings/schema.py), nothing else: a
running daemon told to change every flagged key at once names exactly those keys in
`config.restart_needed` and keeps their running values (it still listens where it did)."""

import configparser
import json
import signal
import socket

import pytest

from conftest import Instance, free_port, wait_for
from connector.settings.schema import KEYS

OTHER = {"path": "var/other.db", "database": "var/other.db", "file": "var/other-file", "str": "other.example",
         "float": "299", "processes": "3"}


def another_value(key, current):
    """A valid value for `key` different from `current`."""
    if key.kind == "hostport":
        return f"127.0.0.1:{free_port()}"
    if key.kind in ("choice", "bool"):
        return next(c for c in key.choices if c != (current or key.default))
    if key.kind in ("count", "size"):
        return str(int(current or key.default) + 1)
    return OTHER[key.kind]


@pytest.mark.sqlite_only("SQLite's files and their folder")
def test_every_restart_key_changed_at_once_is_named_and_kept(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    inst.start()
    try:
        wait_for(lambda: '"worker.started"' in inst.log.read_text(), 15, what="the worker")
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(inst.ini)
        restart = [key for key in KEYS if key.restart]
        for key in restart:
            if not ini.has_section(key.section):
                ini.add_section(key.section)
            ini[key.section][key.name] = another_value(key, ini[key.section].get(key.name))
        with open(inst.ini, "w") as file:
            ini.write(file)
        inst.proc.send_signal(signal.SIGHUP)

        def named():
            return [json.loads(line) for line in inst.log.read_text().splitlines()
                    if '"config.restart_needed"' in line and '"daemon"' in line]
        event = wait_for(named, 15, what="config.restart_needed from the daemon")[0]
        assert sorted(event["keys"]) == sorted(key.field for key in restart)
        assert sorted(event["where"]) == sorted(f"[{key.section}] {key.name}" for key in restart)
        assert inst.proc.poll() is None
        socket.create_connection(("127.0.0.1", inst.port), timeout=5).close()   # still listens where it did
        assert not (tmp_path / "var" / "other.db").exists()                          # the database too
    finally:
        inst.stop()
