"""Prometheus metrics and a health check, served by the daemon on `[metrics] listen`.

    GET /metrics   the Prometheus text format (prometheus_client)
    GET /healthz   the same judgement as `connector status --json`: 200 when
                   healthy or degraded, 503 when down

Intake, filing and delivery run in three processes, and `connector inject`
in one process per mail; rather than each keeping counters of its own
(prometheus_client's multiprocess mode: a file per process, lost for the
pipe), the daemon reads what they all wrote to the store: each scrape adds
the rows that appeared since the last one (`connector.store.figures`: by id, or by the index on
`processing.processed_at`), so the totals cover every intake and survive a
child's restart, and a scrape costs the rows that are new. Counters start at
zero when the daemon starts, as Prometheus expects. Only what the store does
not hold is counted in the daemon itself: SMTP refusals and child restarts.
"""

import json
import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from connector.health.report import DOWN, EXIT, judge, store_figures
from connector.log import get_logger
from connector.store import figures
from connector.store.models import OUTBOX_DEFERRED, SPOOL_DONE

log = get_logger("metrics")

# Why the SMTP/LMTP intake refused, from its reply codes.
REFUSED_NOT_OURS = "not_our_address"   # 5xx to RCPT
REFUSED_RCPT_TEMPORARY = "rcpt_temporary"
REFUSED_STORE_FAILED = "store_failed"  # 4xx to DATA: the spool could not commit
REFUSED_DATA = "data_refused"          # 5xx to DATA
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class IntakeMetrics:
    """Counters the daemon keeps itself; the SMTP handler wrapper feeds them."""

    def __init__(self, registry):
        self.refused = Counter("connector_intake_refused", "SMTP/LMTP commands refused, by reason",
                               ["reason"], registry=registry)

    def count_rcpt(self, reply):
        if not reply.startswith("2"):
            self.refused.labels(REFUSED_NOT_OURS if reply.startswith("5") else REFUSED_RCPT_TEMPORARY).inc()

    def count_data(self, reply):
        if reply.startswith("4"):
            self.refused.labels(REFUSED_STORE_FAILED).inc()
        elif reply.startswith("5"):
            self.refused.labels(REFUSED_DATA).inc()


class CountingHandler:
    """The intake's aiosmtpd handler, with its RCPT and DATA replies counted."""

    def __init__(self, handler, intake_metrics):
        self._handler = handler
        self._metrics = intake_metrics

    def __getattr__(self, name):
        return getattr(self._handler, name)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = await self._handler.handle_RCPT(server, session, envelope, address, rcpt_options)
        self._metrics.count_rcpt(reply)
        return reply

    async def handle_DATA(self, server, session, envelope):
        reply = await self._handler.handle_DATA(server, session, envelope)
        self._metrics.count_data(reply)
        return reply


class DaemonCollector:
    """What only the daemon knows: its children and the configuration in force."""

    def __init__(self, daemon_state):
        self.daemon_state = daemon_state

    def collect(self):
        state = self.daemon_state()
        restarts = CounterMetricFamily("connector_child_restarts", "Restarts of a background process",
                                       labels=["child"])
        up = GaugeMetricFamily("connector_child_up", "1 when the background process runs", labels=["child"])
        looping = GaugeMetricFamily("connector_child_crash_looping", "1 while the process keeps dying",
                                    labels=["child"])
        for name, child in state["children"].items():
            restarts.add_metric([name], child["restarts"])
            up.add_metric([name], 1 if child["state"] == "running" else 0)
            looping.add_metric([name], 1 if child["crash_loop"] else 0)
        yield restarts
        yield up
        yield looping
        yield GaugeMetricFamily("connector_config_generation", "Configuration generation in force "
                                "(1 at start, +1 per accepted reload)", value=state["config"]["generation"])


class StoreMetrics:
    """Counters and gauges read from the store; `refresh()` before each exposition."""

    def __init__(self, registry, clock=time.time, data_dir=None):
        self.clock = clock
        self.data_dir = data_dir   # where the auto-email template failures are noted (health.template_failures)
        self.lock = threading.Lock()
        r = registry
        self.accepted = Counter("connector_intake_accepted", "Messages committed to the spool, by intake",
                                ["intake"], registry=r)
        self.processed = Counter("connector_messages_processed",
                                 "Messages the pipeline finished, by action (shunted: processing failed)",
                                 ["action"], registry=r)
        self.triage = Counter("connector_triage_items", "Messages put in triage, by reason", ["reason"],
                              registry=r)
        self.attempts = Counter("connector_delivery_attempts", "Delivery attempts, by outcome (sent, error)",
                                ["outcome"], registry=r)
        self.latency = Histogram("connector_filing_latency_seconds",
                                 "Seconds from the spool commit to the message being filed",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.backlog = Gauge("connector_spool_backlog_messages", "Spooled messages not filed yet", registry=r)
        self.backlog_age = Gauge("connector_spool_backlog_oldest_age_seconds",
                                 "Age of the oldest unfiled message (0 when none)", registry=r)
        self.outbox = Gauge("connector_outbox_messages", "Outgoing mails by status (sent is not counted; "
                            "deferred: tried, waiting for a retry)", ["status"], registry=r)
        self.outbox_age = Gauge("connector_outbox_oldest_pending_age_seconds",
                                "Age of the oldest outgoing mail still to deliver (0 when none)", registry=r)
        self.scanner_success = Gauge("connector_scanner_last_success_timestamp_seconds",
                                     "When the IMAP scanner last scanned without error", ["scanner"], registry=r)
        self.scanner_error = Gauge("connector_scanner_last_error_timestamp_seconds",
                                   "When the IMAP scanner last failed", ["scanner"], registry=r)
        self.health = Gauge("connector_health_status", "connector status: 0 healthy, 1 degraded, 2 down",
                            registry=r)
        self.marks = figures.marks()

    def refresh(self, daemon_state):
        """Add what the store gained since the last scrape; returns the health judgement."""
        with self.lock:
            now = self.clock()
            self._count_new()
            store = store_figures(now, self.data_dir)
            self._gauges(store)
            verdict = judge(daemon_state, store, now, check_pid=False)
            self.health.set(EXIT[verdict["state"]])
            return dict(verdict, **store)

    def _count_new(self):
        marks = self.marks
        added = figures.added_since(marks)
        for spool_id, intake in added["spool"]:
            self.accepted.labels(intake).inc()
            marks["spool"] = max(marks["spool"], spool_id)
        for processed_at, state, action, latency in added["processed"]:
            self.processed.labels(action if state == SPOOL_DONE and action else state).inc()
            self.latency.observe(max(latency, 0.0))
            marks["processed_at"] = max(marks["processed_at"], processed_at)
        for item_id, reason in added["triage"]:
            self.triage.labels(reason).inc()
            marks["triage"] = max(marks["triage"], item_id)
        for attempt_id, ok in added["attempts"]:
            self.attempts.labels("sent" if ok else "error").inc()
            marks["attempt"] = max(marks["attempt"], attempt_id)

    def _gauges(self, store):
        spool, outbox = store["spool"], store["outbox"]
        self.backlog.set(spool["unfiled"])
        self.backlog_age.set(spool["oldest_unfiled_age"] or 0)
        self.outbox_age.set(outbox["oldest_pending_age"] or 0)
        self.outbox.clear()
        for status in figures.WAITING + ("failed",):
            self.outbox.labels(status).set(0)
        for status, count in outbox["by_status"].items():
            self.outbox.labels(status).set(count)
        self.outbox.labels(OUTBOX_DEFERRED).set(outbox["deferred"])
        self.outbox.labels("pending").set(outbox["pending"] - outbox["deferred"])
        for scanner in store["scanners"]:
            if scanner["last_success"] is not None:
                self.scanner_success.labels(scanner["name"]).set(scanner["last_success"])
            if scanner["last_error"]:
                self.scanner_error.labels(scanner["name"]).set(scanner["last_error"]["at"])


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # scrapes every few seconds would flood the journal
        pass


class MetricsServer:
    """The HTTP endpoint, in one thread of the daemon (a scrape at a time)."""

    def __init__(self, host, port, daemon_state, clock=time.time, data_dir=None):
        self.daemon_state = daemon_state
        self.registry = CollectorRegistry(auto_describe=True)
        self.intake = IntakeMetrics(self.registry)
        self.store = StoreMetrics(self.registry, clock, data_dir)
        self.registry.register(DaemonCollector(daemon_state))
        server_class = type("MetricsHTTPServer", (WSGIServer,), {"address_family": _family(host)})
        self.server = make_server(host, port, self.app, server_class=server_class, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in ("/metrics", "/healthz"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"try /metrics or /healthz\n"]
        try:
            report = self.store.refresh(self.daemon_state())
        except Exception as exc:  # the store is busy or gone: say so, never kill the thread
            log.error("metrics.failed", error=f"{type(exc).__name__}: {exc}")
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"cannot read the store: {exc}\n".encode()]
        if path == "/healthz":
            code = "503 Service Unavailable" if report["state"] == DOWN else "200 OK"
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(report).encode()]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(self.registry)]


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET
