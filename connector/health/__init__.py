"""The daemon's health: how it is seen from outside while mail flows.

    children   start the background processes independently of the working
               directory, restart them with capped backoff, spot a crash loop
    sdnotify   systemd's notify protocol: READY, STOPPING, WATCHDOG
    daemonlock one daemon per data directory: the lock, and the run it records
    state      the state file the daemon publishes in the data directory
    template_failures  auto-email templates that failed on real values (a file
               in the data directory, like the state file): degraded
    report     status = state file + the store's counts (`connector.store.figures`)
               -> healthy / degraded / down
    metrics    Prometheus `/metrics` and `/healthz`, served by the daemon
"""
