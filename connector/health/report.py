"""Health: the daemon's state file and the store's figures, judged.

The levels follow the Nagios/Icinga plugin convention (the exit code of
`connector status`):

    0 healthy   everything below is fine
    1 degraded  mail is accepted, but something needs the operator: a child
                crash-looping or not running, a spool backlog older than
                BACKLOG_DEGRADED_AFTER, outgoing mail waiting longer than
                OUTBOX_DEGRADED_AFTER, failed outgoing mail, messages whose
                processing failed (needs_attention), a scanner whose last
                attempt failed, a configuration change that was refused, an
                auto-email template that failed to render on a real ticket's
                values within the last 24 h and has not rendered since
                (`connector.health.template_failures` says what clears it)
    2 down      no daemon: never started here, stopped, its pid is gone,
                its event loop has not written the state file for
                STALE_AFTER seconds, or the store cannot be read
"""

from connector.health import template_failures
from connector.log import iso
from connector.pipeline.context import REASON_PROCESSING_ERROR
from connector.store import figures
from connector.health.children import RESTARTING, RUNNING, STARTING
from connector.health.state import STALE_AFTER, pid_alive

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}
EX_UNKNOWN = 3  # Nagios' UNKNOWN: `status` cannot tell (its ini cannot be read), which is no verdict
BACKLOG_DEGRADED_AFTER = 300.0   # seconds the oldest unfiled message may wait
OUTBOX_DEGRADED_AFTER = 3600.0   # seconds the oldest outgoing mail may wait
STARTING_TOO_LONG = 60.0         # seconds a child may take to start


def store_figures(now, data_dir=None):
    """The counts status needs; the store must be open. With `data_dir`, the auto-email
    templates that failed there too (`template_failures`: a file, not the store)."""
    return {"spool": dict(figures.spool_backlog(now), shunted=figures.shunted()),
            "outbox": figures.outbox(now),
            "needs_attention": figures.needs_attention(REASON_PROCESSING_ERROR),
            "scanners": figures.scanners(),
            "template_failures": template_failures.recent(data_dir, now) if data_dir else []}


def daemon_problems(state, now, check_pid=True):
    """Why the daemon counts as down (empty when it runs)."""
    if state is None:
        return ["the daemon has never run with this data directory"]
    if state.get("stopped_at"):
        return ["the daemon is stopped"]
    if check_pid and not pid_alive(state["pid"]):
        return [f"the daemon (pid {state['pid']}) is gone"]
    if now - state["updated_at"] > STALE_AFTER:
        return [f"the daemon's event loop has not reported for {now - state['updated_at']:.0f} s"]
    return []


def degraded_problems(state, store, now):
    problems = []
    for name, child in state.get("children", {}).items():
        if child["crash_loop"]:
            problems.append(f"{name} is crash-looping ({child['restarts']} restarts)")
        elif child["state"] == RESTARTING:
            problems.append(f"{name} is not running (restart in {child['retry_in']} s)")
        elif child["state"] == STARTING and now - child["started_at"] > STARTING_TOO_LONG:
            problems.append(f"{name} has been starting for {now - child['started_at']:.0f} s")
        elif child["state"] not in (RUNNING, STARTING):
            problems.append(f"{name} is {child['state']}")
    error = state.get("config", {}).get("reload_error")
    if error:
        problems.append(f"the configuration on disk was refused; the last good one is in force: {error['error']}")
    spool, outbox = store["spool"], store["outbox"]
    if (spool["oldest_unfiled_age"] or 0) > BACKLOG_DEGRADED_AFTER:
        problems.append(f"{spool['unfiled']} messages unfiled, the oldest for {spool['oldest_unfiled_age']:.0f} s")
    if store["needs_attention"]:
        problems.append(f"{store['needs_attention']} messages need attention (connector inbound list)")
    if (outbox["oldest_pending_age"] or 0) > OUTBOX_DEGRADED_AFTER:
        problems.append(f"{outbox['pending']} outgoing mails waiting, the oldest for "
                        f"{outbox['oldest_pending_age']:.0f} s")
    if outbox["failed"]:
        failed = outbox["failed"]
        problems.append(f"{failed} outgoing {'mail' if failed == 1 else 'mails'} failed "
                        "(connector outbox list --status failed)")
    for scanner in store["scanners"]:
        error = scanner["last_error"]
        if error and (scanner["last_success"] or 0) < error["at"]:
            problems.append(f"scanner {scanner['name']} failed: {error['text']}")
    for failure in store.get("template_failures", ()):
        times = "once" if failure["count"] == 1 else f"{failure['count']} times"
        problems.append(f"auto-email template {failure['template']} failed to render {times}, last at "
                        f"{iso(failure['at'])} (ticket {failure['ticket']}, rule {failure['rule']}): "
                        f"{failure['error']}")
    return problems


def judge(state, store, now, check_pid=True):
    """{state, exit, problems}: the level and the reasons for it."""
    problems = daemon_problems(state, now, check_pid)
    level = DOWN if problems else None
    if store is None:
        problems.append("the store cannot be read")
        level = DOWN
    elif not problems:  # a daemon that is down has no children to judge
        more = degraded_problems(state, store, now)
        problems += more
        level = level or (DEGRADED if more else HEALTHY)
    return {"state": level, "exit": EXIT[level], "problems": problems}
