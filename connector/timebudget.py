"""A time budget for the expensive pure steps of one message.

The worker (`connector.pipeline.runner`) decides each message under
`limit([connector] message_time_budget)`. Two steps can spend a long time
on hostile mail while reading nothing but their input and writing nothing:

- HTML to text (`connector.mail.html`) feeds the markup to the parser in
  chunks and looks at `expired()` between two; past the deadline the rest
  is only stripped of its tags (linear), so the full text is still kept;
- reply extraction (`connector.pipeline.extract`) runs inside
  `interruptible()`: on the main thread a SIGALRM set for the time left
  raises `OverBudget` at the next bytecode, or inside a regex search
  (Python's `re` looks for signals while it backtracks), so a rule that
  backtracks for minutes is abandoned and the message is filed with its
  reply text marked as not extracted.

Why this cannot corrupt state: the alarm is armed only inside
`interruptible()`, around code that writes nothing (str in, str out); the
store is written afterwards, in the runner's one transaction, never under
the alarm. `OverBudget` is a BaseException, so no `except Exception` in the
abandoned code swallows it and carries on. Off the main thread, where no
signal arrives, `interruptible()` only looks at the deadline as it starts.
"""

import contextvars
import signal
import threading
import time
from contextlib import contextmanager

_current = contextvars.ContextVar("connector_budget", default=None)


class OverBudget(BaseException):
    """The message's time budget is spent."""


class Budget:
    def __init__(self, seconds, clock=time.monotonic):
        self.clock = clock
        self.deadline = clock() + seconds

    def remaining(self):
        return self.deadline - self.clock()

    def expired(self):
        return self.remaining() <= 0


@contextmanager
def limit(seconds):
    """Run the block under a budget of `seconds` (0 or None: no budget)."""
    token = _current.set(Budget(seconds) if seconds else None)
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def expired():
    """Whether the current budget (if any) is spent."""
    budget = _current.get()
    return budget is not None and budget.expired()


class _Alarm:
    """The process's SIGALRM handler: it raises only while a block is armed."""

    def __init__(self):
        self.armed = False
        self.installed = False

    def on_signal(self, signum, frame):
        if self.armed:
            self.armed = False  # one raise per arming, even if the block is leaving already
            raise OverBudget()

    def arm(self, seconds):
        if not self.installed:
            signal.signal(signal.SIGALRM, self.on_signal)
            self.installed = True
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self):
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


_alarm = _Alarm()


@contextmanager
def interruptible():
    """Run a pure block that may be abandoned: raises OverBudget when the budget runs out."""
    budget = _current.get()
    if budget is None:
        yield
        return
    if budget.expired():
        raise OverBudget()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _alarm.arm(budget.remaining())
    try:
        yield
    finally:
        _alarm.disarm()
