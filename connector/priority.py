"""The CPU class of the daemon's background processes (the filing workers, delivery).

They run in the idle class, so that accepting mail never waits for them;
`app.run_background` puts each there with `background()` once it has
imported what it runs. Not earlier, in the children's bootstrap: tried
(fc9a092) and taken back, because idle-class imports on a loaded machine
held delivery's start for seconds (a test's configuration edit overtook
it), for a gain at start-up within the noise (docs/measurements.md). On a
machine busy with other work, idle children may still take long to open
their store: the daemon then extends systemd's start timeout
(`app.Daemon._extend_start`).
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
