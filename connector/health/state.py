"""The daemon's state file: what `connector status` needs from the running daemon.

`<data directory>/daemon-status.json`, 0600, replaced atomically (written
beside, then renamed) every HEARTBEAT seconds from the intake's event loop
and whenever a child changes state. It holds the daemon's pid, the listen
address, the children (pid, state, restarts), the configuration generation
in force and the last reload error. A heartbeat older than STALE_AFTER means
the event loop is stuck. Counts come from the store, not from here.
"""

import json
import os
from pathlib import Path

from connector.store.claims import pid_alive  # noqa: F401 (health's name for it: report, db)

FILE = "daemon-status.json"
HEARTBEAT = 2.0     # seconds between two writes
STALE_AFTER = 30.0  # a state file not rewritten for this long: the daemon hangs


def state_path(data_dir):
    return Path(data_dir) / FILE


def write_state(data_dir, state):
    replace_json(state_path(data_dir), state)


def replace_json(path, data):
    """Write `data` to `path` as JSON, 0600, atomically: written beside, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
    os.replace(tmp, path)


def read_state(data_dir):
    """The last state the daemon wrote, or None when there is none (never started here)."""
    try:
        return json.loads(state_path(data_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def daemon_running(data_dir):
    """Whether the daemon of this data directory runs now (its state file says so and its pid lives)."""
    state = read_state(data_dir)
    return bool(state and not state.get("stopped_at") and pid_alive(state["pid"]))
