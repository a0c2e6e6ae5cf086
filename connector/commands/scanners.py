"""`scanners status [--json]`, `scanners run NAME`, `scanners test NAME FILE.eml`, `example-scanners`."""

import json
import sys
from collections import Counter
from pathlib import Path

from connector.commands.common import EX_CONFIG, EX_TEMPFAIL, emit, open_store_of, settings_or_exit
from connector.log import iso
from connector.scanners.config import scanners_of
from connector.scanners.schema import render_example
from connector.settings import ConfigError
from connector.store.db import exists


def _settings_or_exit(args):
    """The settings, config/scanners.yaml read and checked; on a bad config the error, exit 1."""
    settings = settings_or_exit(args)
    try:
        scanners_of(settings)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
    return settings


def _scanner_or_exit(settings, name):
    for cfg in scanners_of(settings):
        if cfg.name == name:
            return cfg
    known = ", ".join(c.name for c in scanners_of(settings)) or "none configured"
    print(f"connector: no scanner {name!r} in {settings.find('config', 'scanners.yaml')} ({known})",
          file=sys.stderr)
    raise SystemExit(1)


def cmd_status(args):
    settings = _settings_or_exit(args)
    open_store_of(args, settings)
    from connector.store.scanners import status_json
    rows = [status_json(cfg, iso) for cfg in scanners_of(settings)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    emit(args, [{"name": r["name"], "active": r["active"], "last_success": r["last_success"],
                 "last_error": f"{r['last_error']['time']} {r['last_error']['text']}" if r["last_error"] else None,
                 "imported": r["imported"], "failed": len(r["failed"]),
                 "last_uid": [f"{f}:{u if u is not None else '-'}" for f, u in r["last_uid"].items()]}
                for r in rows], ["name", "active", "imported", "failed", "last_uid", "last_success", "last_error"])
    return 0


def cmd_run(args):
    """Seed 003's Run button: scan once now, also a scanner that is not active."""
    settings = _settings_or_exit(args)
    cfg = _scanner_or_exit(settings, args.name)
    open_store_of(args, settings, create=True)
    from connector.intake.imap import Fenced, Scanner, connect, logout
    from connector.scanners.service import describe
    from connector.store.leases import scanner_lease
    keeper = _lease_or_exit(settings, cfg.name)
    lease = scanner_lease(cfg.name)
    scanner = Scanner(cfg, may_work=(lambda: keeper.holds(lease)) if keeper else None)
    try:
        result = scanner.scan(connect(cfg))
    except Fenced:  # the lease could not be renewed in time: another node may scan now
        print(f"connector: scanner {cfg.name}: stopped, its lease was lost (the store did not answer in time); "
              "what was imported is kept, run it again", file=sys.stderr)
        return EX_TEMPFAIL
    except Exception as exc:
        text = describe(exc)
        scanner.state.error(text)
        print(f"connector: scanner {cfg.name}: {text}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        if scanner.client is not None:
            logout(scanner.client)
        if keeper is not None:
            keeper.finish()
    # Seed 003's Run button makes the tickets now: what this run imported goes through the
    # pipeline here, daemon running or not (an entry the daemon's worker already took is
    # skipped: Runner.process re-reads its state under the write lock).
    actions = _process(settings, result.spool_ids)
    data = dict(scanner=cfg.name, **result.as_json(), processed=actions)
    if args.json:
        print(json.dumps(data))
    else:
        done = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
        print(f"scanner {cfg.name}: fetched {result.fetched}, imported {result.imported}, "
              f"already imported {result.known}, left {result.left}, failed {result.failed}"
              + (f"; filed: {done}" if done else ""))
    for folder, error in result.folder_errors.items():
        print(f"connector: scanner {cfg.name}: folder {folder}: {error}", file=sys.stderr)
    return EX_TEMPFAIL if result.folder_errors else 0


def _lease_or_exit(settings, name):
    """On PostgreSQL (several nodes), this run holds the scanner's lease while it scans, so one
    mailbox is never scanned by two processes at once: a LeaseKeeper renewing it, or exit 75
    naming the node whose daemon scans it now. On SQLite (one node) it scans beside its daemon."""
    from connector.singletons import LeaseKeeper
    from connector.store import dialect, leases
    if not dialect.is_postgres():
        return None
    lease = leases.scanner_lease(name)
    keeper = LeaseKeeper(settings.node_name, settings.failover_seconds)
    keeper.want([lease])
    keeper.tick()  # one try, here: taken, or held by another process
    if keeper.failing:
        print(f"connector: scanner {name}: the store did not answer (see the log's lease.failed); nothing was "
              "scanned", file=sys.stderr)
        raise SystemExit(EX_TEMPFAIL)
    if not keeper.holds(lease):
        holder = next((row for row in leases.held() if row.name == lease), None)
        where = f"node {holder.node} (pid {holder.pid})" if holder else "another node"
        print(f"connector: scanner {name} is scanning on {where} now; nothing was scanned here "
              "(its daemon scans it: wait for that, or run this again when it has stopped)", file=sys.stderr)
        raise SystemExit(EX_TEMPFAIL)
    keeper.start()
    return keeper


def _process(settings, spool_ids):
    """{action: count} for the spool entries processed now."""
    if not spool_ids:
        return {}
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.store.views import actions_of
    runner = Runner(open_services(settings))
    for spool_id in spool_ids:
        runner.process(spool_id)
    return dict(Counter(actions_of(spool_ids)))


def cmd_test(args):
    """Which rule matches FILE.eml and what its actions would do; changes nothing."""
    settings = _settings_or_exit(args)
    cfg = _scanner_or_exit(settings, args.name)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"connector: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    folder = args.folder or cfg.folders[0]
    if folder not in cfg.folders:
        print(f"connector: scanner {cfg.name} does not read folder {folder!r} ({', '.join(cfg.folders)})",
              file=sys.stderr)
        return 1
    from connector.mail.parse import parse_message
    from connector.scanners.rules import decide
    decision = decide(cfg, folder, raw, parse_message(raw))
    data = {"scanner": cfg.name, "folder": folder, "matched": decision.rule is not None, **decision.as_json()}
    data["pipeline"] = _pipeline_preview(settings, cfg, raw, decision)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(f"scanner {cfg.name}, folder {folder}")
    if decision.rule is not None:
        rule = cfg.find_rule(decision.rule)
        print(f"rule {decision.rule!r} matches: {rule.conditions.describe()}")
    else:
        print(f"no rule matches (unmatched: {cfg.unmatched})")
    for number, text in enumerate(decision.described, 1):
        print(f"  {number}. {text}")
    if decision.imports:
        print("  then: flagged \\Seen once the spool has committed it")
        print(f"hints for the pipeline: {json.dumps(decision.hints)}")
    else:
        print("not imported")
    if data["pipeline"]:
        preview = data["pipeline"]
        print(f"pipeline would decide: {preview['action']}"
              + (f" (ticket {preview['ticket']})" if preview.get("ticket") else "")
              + (f", {preview['reason']}" if preview.get("reason") else ""))
    return 0


def _pipeline_preview(settings, cfg, raw, decision):
    """The pipeline's dry-run decision for an imported message, when the store exists (read only)."""
    if not decision.imports or not exists(settings.database):
        return None
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.store.spool import unsaved_entry
    runner = Runner(open_services(settings))
    summary = runner.dry_run(unsaved_entry(raw, intake=cfg.intake, hints=decision.hints)).summary()
    return {k: summary.get(k) for k in ("action", "ticket", "reason", "sender", "recipients")}


def cmd_example_scanners(args):
    sys.stdout.write(render_example())
    return 0


def register(subparsers):
    p = subparsers.add_parser("example-scanners",
                              help="print config/scanners.yaml.example (every key, its default, a sample)")
    p.set_defaults(handler=cmd_example_scanners)
    parser = subparsers.add_parser("scanners", help="IMAP mail scanners: status, run now, test a rule")
    inner = parser.add_subparsers(dest="scanners_command", metavar="ACTION")
    inner.required = True
    p = inner.add_parser("status", help="every scanner: last success, last error, last UID, imported")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)
    p = inner.add_parser("run", help="scan one scanner's folders once, now")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_run)
    p = inner.add_parser("test", help="show which rule matches FILE.eml and what it would do; changes nothing")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE.eml")
    p.add_argument("--folder", help="the folder the message is assumed to be in (default: the first)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_test)
