"""The CPU class of the daemon's background processes (the filing workers, delivery).

They run in the idle class, so that accepting mail never waits for them;
`background()` puts a process there. A child the daemon starts calls it
first, in its bootstrap (`health.children.BOOTSTRAP`), so that its start-up
(imports, templates, opening the store: a few tenths of a second of CPU)
runs idle too: a child restarted while mail flows no longer competes with
the intake. `connector worker|deliver` started by hand or by systemd gets
there in `app.run_background`. On a machine busy with other work, idle
children may take long to start: the daemon then extends systemd's start
timeout (`app.Daemon._extend_start`).
"""

import os

FALLBACK_NICENESS = 19  # where the idle class is missing: the lowest priority instead


def background():
    """This process in the idle CPU class (where that class is missing, nice 19; the kernel
    keeps a niceness at 19 however often this is called)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(FALLBACK_NICENESS)
