"""What the health tests share: starting the daemon their way, reading its log and status."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port, wait_for

CONSOLE_SCRIPT = Path(sys.executable).parent / "connector"


def add_metrics(instance):
    """Serve metrics on a free port; returns the base URL."""
    port = free_port()
    instance.ini.write_text(instance.ini.read_text() + f"[metrics]\nlisten = 127.0.0.1:{port}\n")
    return f"http://127.0.0.1:{port}"


def events(instance, name):
    lines = [json.loads(line) for line in instance.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def status(instance):
    """(exit code, the --json report)."""
    result = instance.cli("status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def children_running(instance):
    code, report = status(instance)
    children = report["children"]
    return children and all(c["state"] == "running" for c in children.values()) and report


def get(url):
    """(HTTP status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_from(instance, cwd, argv):
    """Start the daemon with `argv` from `cwd` (what systemd's WorkingDirectory= does)."""
    instance.proc = subprocess.Popen(argv, stdout=open(instance.log, "ab"), stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)
    wait_for(lambda: instance.proc.poll() is None and instance.log.exists()
             and events(instance, "daemon.started"), 15, what="daemon started")
    return instance

