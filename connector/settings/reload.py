"""Watch the configuration files and reload them while the daemon runs.

A change to the ini, or to `config/`, `templates/` or `rules/` next to it (or SIGHUP, as
`systemctl reload` sends) loads and validates everything again: watchdog
reports changes in the two folders at once, and a look at the files'
fingerprint once a second catches the ini. A good
configuration replaces the running one; a bad one is logged with the same
message `check-config` prints, and the last good configuration stays in
force: a typo never stops a running daemon.
"""

import os
import threading
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from connector.settings.schema import RESTART_FIELDS

DEBOUNCE = 0.3  # editors write a file in several steps
WATCHED = ("config", "templates", "rules")  # the folders beside the ini


def keep_in_force(old, new):
    """Carry the restart-only keys (schema: `restart`) of the running `old` settings into `new`,
    with the values derived from them (listen_host, …); returns the keys whose change waits
    for a restart. Every process reloads through this, so a new `database` never half-applies."""
    changed = [key for key in RESTART_FIELDS if getattr(new, key) != getattr(old, key)]
    for name, value in old.values.items():
        if any(name == key or name.startswith(key + "_") for key in changed):
            new.values[name] = value
    return changed


def is_config_file(settings, path):
    """The ini, a file in config/ or templates/, or a rule file in rules/ next to the ini."""
    base = settings.base_dir
    if path.name.startswith(".") or path.name.endswith("~"):
        return False  # editors' swap and backup files
    return path == settings.ini_path \
        or path.parent == base / "config" or (base / "templates") in path.parents \
        or (path.parent == base / "rules" and path.suffix in (".yaml", ".yml"))


def fingerprint(settings):
    """(name, mtime, size) of every configuration file: changes when any of them does."""
    base = settings.base_dir
    candidates = [settings.ini_path] + [p for folder in WATCHED if (base / folder).is_dir()
                                        for p in sorted((base / folder).rglob("*") if folder == "templates"
                                                        else (base / folder).iterdir())]
    result = []
    for path in candidates:
        if is_config_file(settings, path):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            result.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class _Handler(FileSystemEventHandler):
    """Passes on events about configuration files only (not logs or databases beside them)."""

    def __init__(self, on_change, is_config):
        self.on_change = on_change
        self.is_config = is_config

    def on_any_event(self, event):
        if event.is_directory or event.event_type not in ("created", "modified", "moved", "deleted"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and self.is_config(Path(os.fsdecode(p))) for p in paths):
            self.on_change()


class ConfigWatcher:
    """Calls `on_change()` (from a timer thread) once a burst of file events has settled.

    watchdog watches `config/`, `templates/` and `rules/`, which nothing else writes to.
    The ini's own folder may be busy (a log file, the database) and every
    event there would cost the intake CPU, so the ini is not watched here:
    the daemon compares the files' `fingerprint` once a second instead.
    """

    def __init__(self, settings, on_change):
        self.on_change = on_change
        self.observer = Observer()
        self._timer = None
        self._lock = threading.Lock()
        handler = _Handler(self._changed, lambda path: is_config_file(settings, path))
        for folder in WATCHED:
            path = settings.base_dir / folder
            if path.is_dir():
                # templates/ may hold folders of its own ({% include "parts/footer.j2" %})
                self.observer.schedule(handler, str(path), recursive=path.name == "templates")

    def _changed(self):
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(DEBOUNCE, self.on_change)
            self._timer.daemon = True
            self._timer.start()

    def start(self):
        self.observer.daemon = True
        self.observer.start()

    def stop(self):
        self.observer.stop()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
