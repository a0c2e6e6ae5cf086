"""The CPU class of the daemon's background processes (the filing workers, delivery).

They run in the idle class, so that accepting mail never waits for them;
`background()` puts a process there. A child the daemon starts calls it
first, in its bootstrap (`health.children.BOOTSTRAP`), before it imports the
pipeline: its start-up (imports, templates, opening the store) takes a few
tenths of a second of CPU, which in the normal class competed with the
intake for the two cores and put the first half second of mail after a
start or a restart at 5-10 ms. `connector worker|deliver` started by hand or
by systemd gets there in `app.run_background`.
"""

import os

FALLBACK_NICENESS = 19  # where the idle class is missing: the lowest niceness instead


def background():
    """This process in the idle CPU class (idempotent; where that class is missing, nice 19)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(FALLBACK_NICENESS - os.nice(0))  # to 19, however often it is called
