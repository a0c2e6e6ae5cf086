"""The operator's hand on the outbox: retry a row now, or cancel it (`connector outbox retry|cancel`).

Both change one row in one statement that checks its status, so a running
delivery process never undoes them: it records what the relay answered
without reviving a row cancelled meanwhile. A row the delivery process had
already picked up (its batch, at most a second or so) may still go out once.
"""

import time

from connector.outbound.replies import ACCEPTED
from connector.store import outbox, wakeup
from connector.store.models import OUTBOX_ACTIVE, OUTBOX_CANCELLED, OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT
from connector.store.views import change_outbox_row, outbox_row

CANCELLABLE = (*OUTBOX_ACTIVE, OUTBOX_FAILED)  # a failed row is cancelled to acknowledge it
RETRYABLE = (*OUTBOX_ACTIVE, OUTBOX_FAILED, OUTBOX_SENT)  # sent: only if some recipient was refused


class OutboxStateError(Exception):
    """The row does not exist, or its status does not allow the action; the text says which."""


def _get(entry_id):
    entry = outbox_row(entry_id)
    if entry is None:
        raise OutboxStateError(f"no outbox row {entry_id}")
    return entry


def retry(entry_id, clock=time.time):
    """Due now, for every recipient not accepted yet (refused ones too); give_up_after restarts."""
    entry = _get(entry_id)
    states = {a: s for a, s in (entry.recipients or {}).items() if s["state"] == ACCEPTED}
    if entry.status not in RETRYABLE or (entry.status == OUTBOX_SENT and len(states) == len(set(entry.rcpt))):
        reason = ("was delivered to every recipient" if entry.status == OUTBOX_SENT
                  else f"is {entry.status}")
        raise OutboxStateError(f"outbox row {entry_id} {reason}: nothing to retry")
    if not outbox.body(entry_id):
        raise OutboxStateError(f"outbox row {entry_id}: its body was pruned ([retention] raw_days); "
                               "nothing to send")
    now = clock()
    changed = change_outbox_row(entry_id, (entry.status,), status=OUTBOX_PENDING, next_attempt_at=now,
                                queued_at=now, recipients=states)
    if not changed:
        raise OutboxStateError(f"outbox row {entry_id} changed meanwhile; look again with `outbox list`")
    wakeup.notify(wakeup.DELIVER)
    return _get(entry_id)


def cancel(entry_id):
    """Never send this row again (to any recipient not accepted yet)."""
    entry = _get(entry_id)
    if entry.status not in CANCELLABLE:
        raise OutboxStateError(f"outbox row {entry_id} is {entry.status}: only "
                               f"{', '.join(CANCELLABLE)} rows can be cancelled")
    changed = change_outbox_row(entry_id, CANCELLABLE, status=OUTBOX_CANCELLED)
    if not changed:
        raise OutboxStateError(f"outbox row {entry_id} changed meanwhile; look again with `outbox list`")
    wakeup.notify(wakeup.DELIVER)
    return _get(entry_id)
