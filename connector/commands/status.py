"""`connector status [--json]`: is the daemon healthy? Usable as a Nagios/Icinga check.

Reads the state file the running daemon publishes in the data directory and
counts from the store (`connector.health`); needs only the ini, so it works
while a YAML file is broken. Exit 0 healthy, 1 degraded, 2 down (the levels
are defined in `connector.health.report`), 3 unknown: an ini it cannot read or
parse, or a file of the data directory this user may not read; the first line of
the text form, on stdout in every case, is the plugin's one-line summary with
performance data (`CONNECTOR UNKNOWN - why` when there is no verdict).
"""

import json
import time

from connector.log import iso
from connector.health.report import EX_UNKNOWN, EXIT, daemon_problems, judge, store_figures
from connector.health.state import read_state
from connector.settings import ConfigError
from connector.settings.errors import permission_denied
from connector.settings.loader import data_dir_of, load_ini
from connector.store.db import exists, open_without_upgrade


def held_here(node):
    """The leases this node ([node] name) holds: its scanners, deadlines, retention (`connector nodes`)."""
    from connector.store import leases
    from connector.store.models import database
    if not database.table_exists("lease"):  # a store from before the leases, not upgraded yet
        return []
    return [lease.name for lease in leases.held(node)]


def gather(values, now):
    database, data_dir = values["database"], data_dir_of(values)
    state = read_state(data_dir)
    store = None
    if exists(database):
        try:
            open_without_upgrade(database)  # a check changes nothing: no migration, no table made
            store = store_figures(now, data_dir)
            store.update(node=values["node_name"], holds=held_here(values["node_name"]))
        except ConfigError as exc:
            store_error = str(exc)
        except Exception as exc:  # a locked, unreadable or foreign file: the check must still answer
            store_error = f"the database cannot be read: {exc}"
        else:
            store_error = None
    else:
        store_error = f"no database at {database}"
    verdict = judge(state, store, now)
    if store_error:
        verdict["problems"].append(store_error)
    return verdict, state, store


def report_json(verdict, state, store, now):
    daemon = None
    if state is not None:
        daemon = {"pid": state["pid"], "running": not daemon_problems(state, now),
                  "started_at": iso(state["started_at"]), "updated_at": iso(state["updated_at"]),
                  "listen": state["listen"], "ready": state["ready"]}
    children = {name: {"pid": c["pid"], "state": c["state"], "restarts": c["restarts"],
                       "crash_loop": c["crash_loop"], "retry_in": c["retry_in"]}
                for name, c in (state or {}).get("children", {}).items()}
    config = (state or {}).get("config")
    return {
        "state": verdict["state"], "exit": verdict["exit"], "problems": verdict["problems"],
        "daemon": daemon, "children": children,
        "config": {"generation": config["generation"], "loaded_at": iso(config["loaded_at"]),
                   "reload_error": config["reload_error"] and dict(config["reload_error"],
                                                                   at=iso(config["reload_error"]["at"]))}
        if config else None,
        "spool": store and store["spool"],
        "outbox": store and {k: v for k, v in store["outbox"].items() if k != "by_status"},
        "needs_attention": store and store["needs_attention"],
        "node": store and {"name": store["node"], "holds": store["holds"]},
        "scanners": [{"name": s["name"], "last_success": iso(s["last_success"]),
                      "last_error": s["last_error"] and {"text": s["last_error"]["text"],
                                                         "time": iso(s["last_error"]["at"])}}
                     for s in (store or {}).get("scanners", [])],
        "template_failures": [{"template": f["template"], "rule": f["rule"], "ticket": f["ticket"],
                               "event": f["event"], "error": f["error"], "time": iso(f["at"]),
                               "first_time": iso(f["first_at"]), "count": f["count"]}
                              for f in (store or {}).get("template_failures", [])],
    }


def _age(seconds):
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def print_text(data):
    summary = "; ".join(data["problems"]) or "accepting, filing and delivering"
    spool, outbox = data["spool"], data["outbox"]
    perf = ""
    if spool:
        perf = (f" | unfiled={spool['unfiled']} unfiled_age={spool['oldest_unfiled_age'] or 0:.0f}s "
                f"outbox_pending={outbox['pending']} outbox_failed={outbox['failed']}")
    print(f"CONNECTOR {data['state'].upper()} - {summary}{perf}")
    daemon = data["daemon"]
    if daemon:
        config = data["config"]
        print(f"daemon    pid {daemon['pid']}, listening on {daemon['listen']}, since {daemon['started_at']}, "
              f"config generation {config['generation']} (loaded {config['loaded_at']})")
    for name, child in data["children"].items():
        extra = f", restart in {child['retry_in']} s" if child["retry_in"] is not None else ""
        loop = ", CRASH-LOOPING" if child["crash_loop"] else ""
        print(f"{name:<9} pid {child['pid'] or '-'}, {child['state']}{loop}, {child['restarts']} restarts{extra}")
    if spool:
        print(f"spool     {spool['unfiled']} unfiled (oldest {_age(spool['oldest_unfiled_age'])}), "
              f"{spool['shunted']} shunted")
        print(f"outbox    {outbox['pending']} pending ({outbox['deferred']} deferred, oldest "
              f"{_age(outbox['oldest_pending_age'])}), {outbox['failed']} failed")
    if data["node"]:
        print(f"node      {data['node']['name']} holds {', '.join(data['node']['holds']) or 'no lease'}")
    for scanner in data["scanners"]:
        error = scanner["last_error"]
        print(f"scanner   {scanner['name']}: last success {scanner['last_success'] or '-'}, last error "
              + (f"{error['time']}: {error['text']}" if error else "-"))
    for failure in data["template_failures"]:
        print(f"template  {failure['template']}: failed {failure['count']}x since {failure['first_time']}, last "
              f"{failure['time']} (ticket {failure['ticket']}, rule {failure['rule']}): {failure['error']}")


UNKNOWN = "unknown"


def cmd_status(args):
    now = time.time()
    try:
        verdict, state, store = gather(load_ini(args.config)[1], now)
    except ConfigError as exc:
        return _unknown(args, f"configuration error: {exc}")
    except PermissionError as exc:  # a state file of the data directory this user may not read
        return _unknown(args, str(permission_denied(exc)))
    data = report_json(verdict, state, store, now)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print_text(data)
    return EXIT[verdict["state"]]


def _unknown(args, problem):
    """No verdict (Nagios' UNKNOWN): the reason on stdout, where a check's output is read (a
    bad ini or an unreadable data directory printed nothing there, an outside test)."""
    if args.json:
        print(json.dumps({"state": UNKNOWN, "exit": EX_UNKNOWN, "problems": [problem]}, ensure_ascii=False, indent=2))
    else:
        print(f"CONNECTOR {UNKNOWN.upper()} - {problem}")
    return EX_UNKNOWN


def register(subparsers):
    p = subparsers.add_parser("status", help="health of the daemon, its processes, spool, outbox and scanners "
                                             "(exit 0 healthy, 1 degraded, 2 down, 3 unknown)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)
