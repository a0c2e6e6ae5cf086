"""Watch the configuration files and reload them while the daemon runs.

A change to the ini, or to `config/`, `templates/` or `rules/` next to it (or SIGHUP, as
`systemctl reload` sends) loads and validates everything again: watchdog
reports changes in the two folders at once, and a look at the files'
fingerprint once a second catches the ini. A good
configuration replaces the running one; a bad one is logged with the same
message `check-config` prints, and the last good configuration stays in
force: a typo never stops a running daemon.

`Reloader` is the one way every process reloads: the daemon (and the scanners
and intake inside it), the filing worker and the delivery process.
"""

import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from connector.log import get_logger
from connector.settings.errors import ConfigError
from connector.settings.schema import RESTART_FIELDS, WHERE

log = get_logger("config")
KEEPING = "last good configuration"

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


class Reloader:
    """The settings in force in one process, and how they are replaced.

    `load(ini_path)` is what `connector run` checks at start (connector.checks.load_checked:
    settings, rules, templates, data directory), injected because `settings` knows nothing
    above it. `reload(apply)` loads the files again, carries the restart-only keys over and
    hands the new settings to `apply`, which swaps them in or raises; when loading or
    applying fails the running settings stay (`config.reload_failed`).
    """

    def __init__(self, settings, load, process, clock=time.time):
        self.settings = settings
        self.load = load
        self.process = process
        self.clock = clock
        self.fingerprint = self.in_force = fingerprint(settings)
        self.generation = 1
        self.loaded_at = clock()
        self.error = None  # {"error", "at"} of the last refused reload, None after a good one

    def files_changed(self):
        """A SIGHUP can arrive before its handler exists; the files' fingerprint cannot be missed."""
        return fingerprint(self.settings) != self.fingerprint

    def reload(self, apply):
        """Returns whether the new settings are in force."""
        self.fingerprint = fingerprint(self.settings)
        try:
            settings = self.load(self.settings.ini_path)
            restart = keep_in_force(self.settings, settings)  # e.g. a new database waits for the restart
            apply(settings)
        except ConfigError as exc:
            return self._refuse(str(exc))
        except Exception as exc:  # a file changed again since the check, or an error of ours
            return self._refuse(f"{type(exc).__name__}: {exc}")
        self.settings = settings
        if self.fingerprint != self.in_force:  # watchdog and the fingerprint can both report one change
            self.in_force = self.fingerprint
            self.generation += 1
            self.loaded_at = self.clock()
        self.error = None
        if restart:
            log.warning("config.restart_needed", process=self.process, keys=restart,
                        where=[WHERE[k] for k in restart])
        log.info("config.reloaded", process=self.process, generation=self.generation,
                 restart_needed=[WHERE[k] for k in restart] or None)
        return True

    def _refuse(self, error):
        self.error = {"error": error, "at": self.clock()}
        log.error("config.reload_failed", process=self.process, error=error, keeping=KEEPING)
        return False

    def state(self):
        """The `config` part of the daemon's state file: {generation, loaded_at, reload_error}."""
        return {"generation": self.generation, "loaded_at": self.loaded_at, "reload_error": self.error}
