"""Auto-email templates that failed on real values: what `connector status` says of them.

`check-config` renders every template with sample values, so a template that
passes it can still fail on a real ticket's (a value it lacks, a filter that
breaks on it). The mail is then left out and `auto_email.render_failed` logged
(`connector.workqueue.auto_emails`), and the failure is noted here, in
`<data directory>/template-failures.json` (0600, replaced atomically under a
lock: every filing process and the commands write it), per template: the
rule, ticket and event of its last failure, the error, when it first and last
failed, how often. `connector status` (and `/healthz`) is degraded while a
template has a failure that counts (`connector.health.report`).

*Decision*, what clears it:

- a later successful render of the same template for a mail that is queued
  (the pipeline's auto-emails, those of the events a command or the deadline
  timer records); `auto-emails preview` and `replay --dry-run` write nothing
  and clear nothing;
- age: a failure not repeated for CLEARED_AFTER (24 h) no longer counts, so a
  template fixed for an event that seldom happens does not keep the check
  degraded for ever (the log keeps every failure).

The file is the node's, like the state file: each node's `connector status`
reports the failures of its own processes. Noting a failure never stops mail:
a file that cannot be written is one warning (`auto_email.failure_not_noted`).
"""

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from connector.health.state import replace_json
from connector.log import get_logger

log = get_logger("auto_email")

FILE = "template-failures.json"
LOCK = ".template-failures.lock"
CLEARED_AFTER = 86400.0   # seconds after its last failure that a template's failure stops counting


@dataclass
class Renders:
    """What the auto-emails of one plan (or one recorded event) rendered, to note once queued."""

    failed: list = field(default_factory=list)     # {template, rule, ticket, event, error}
    rendered: set = field(default_factory=set)     # the templates that rendered

    def failure(self, template, rule, ticket, event, error):
        self.failed.append({"template": template, "rule": rule, "ticket": ticket, "event": event, "error": error})


def note(data_dir, renders, now):
    """Note `renders` (its failures, and the templates it cleared) at `now`."""
    if not renders.failed and not renders.rendered:
        return
    path = Path(data_dir) / FILE
    if not renders.failed and not path.exists():   # the usual case: nothing failed, nothing to clear
        return
    try:
        with _locked(data_dir):
            known = _read(path)
            kept = {name: f for name, f in known.items()
                    if name not in renders.rendered and now - f["at"] <= CLEARED_AFTER}
            for failure in renders.failed:
                before = kept.get(failure["template"])
                kept[failure["template"]] = dict(failure, at=now, first_at=before["first_at"] if before else now,
                                                 count=before["count"] + 1 if before else 1)
            if kept != known:
                replace_json(path, kept)
                _owned_by_data_dir(path, data_dir)
    except OSError as exc:
        log.warning("auto_email.failure_not_noted", path=str(path), error=str(exc),
                    hint="run commands as the connector's user (the data directory is theirs)")
    except Exception as exc:  # noting is never worth a mail: filing goes on whatever the file holds
        log.warning("auto_email.failure_not_noted", path=str(path), error=f"{type(exc).__name__}: {exc}")


def recent(data_dir, now):
    """The failures that count at `now`, by template: [{template, rule, ticket, event, error, at,
    first_at, count}]."""
    try:
        known = _read(Path(data_dir) / FILE)
    except OSError:
        return []
    return [known[name] for name in sorted(known) if now - known[name]["at"] <= CLEARED_AFTER]


def _read(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:   # never left half-written (replaced atomically); a hand-edited file is no failure
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: failure for name, failure in data.items() if _well_formed(failure)}


FIELDS = {"template": str, "at": (int, float), "first_at": (int, float), "count": int}


def _well_formed(failure):
    """Whether an entry has what `note` and `recent` read (a hand-edited entry that has not
    is dropped: it once stopped filing, a KeyError inside the filing transaction)."""
    return isinstance(failure, dict) and all(isinstance(failure.get(key), kind) for key, kind in FIELDS.items())


def _owned_by_data_dir(path, data_dir):
    """Run as root (`sudo connector inbox take ...`), a file this module makes is given to the
    data directory's owner: else the daemon could no longer note failures (a review)."""
    if os.geteuid() == 0:
        owner = os.stat(data_dir)
        os.chown(path, owner.st_uid, owner.st_gid)


@contextmanager
def _locked(data_dir):
    fd = os.open(Path(data_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    _owned_by_data_dir(Path(data_dir) / LOCK, data_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
