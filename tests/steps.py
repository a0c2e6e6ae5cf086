"""The deciding steps on a temp-file store with a frozen clock: no daemon, no SMTP.

`StepWorld` is an installation (tests/conftest.py's staff and accounts) whose
store holds ticket #1, opened by Ann Customer <ann@acme.example> (Acme,
managed by jane@example.com). `decide(name)` runs the pipeline's deciding
steps on tests/fixtures/steps/<name>.eml (the `replay --dry-run` path) and
returns the context; `file(name)` processes it for real.
"""

import copy
import dataclasses
from pathlib import Path

from conftest import Instance, make_mail

FIXTURES = Path(__file__).parent / "fixtures" / "steps"
FROZEN = 1_800_000_000.0   # every clock of the world reads this

# What the envelope or a scanner rule adds to a fixture (default: delivered to support@).
ENVELOPE = {
    "notifications_automatic": {"rcpt_to": ["notifications@example.com"]},
    "notifications": {"rcpt_to": ["notifications@example.com"]},
    "contact_only": {"hints": {"create_ticket": False}},
    # settings of the world changed for this fixture alone
    "unauthenticated_staff": {"settings": {"staff_authentication": "authentication_results",
                                           "trusted_authserv_ids": "mx.example.com"}},
    "scanner_rule_follow_up": {"hints": {"ticket_match": r"PX-(\d+)"}},
    # staff decided a triage item (connector.workqueue.triage)
    "staff_new_ticket": {"hints": {"triage": {"action": "new_ticket", "item": 1, "by": "bob@example.com",
                                              "via": "cli"}}},
    "staff_attached": {"hints": {"triage": {"action": "attach", "item": 1, "by": "bob@example.com", "via": "cli",
                                            "ticket": 1, "internal": False}}},
    "staff_attached_internal": {"hints": {"triage": {"action": "attach", "item": 1, "by": "bob@example.com",
                                                     "via": "cli", "ticket": 1, "internal": True}}},
}


class StepWorld:
    def __init__(self, path, **ini):
        from connector.app import open_services
        from connector.pipeline.runner import Runner
        from connector.settings import load_settings
        from connector.store.spool import store_message
        inst = Instance(path, 2500, **ini)
        self.instance = inst
        self.services = open_services(load_settings(inst.ini), clock=lambda: FROZEN, synchronous="off")
        self.runner = Runner(self.services)
        first = make_mail(subject="Printer broken", sender="ann@acme.example", name="Ann Customer",
                          message_id="<first@acme.example>").as_bytes()
        self.runner.process(store_message(first, rcpt_to=["support@example.com"], intake="test",
                                          clock=lambda: FROZEN))

    def _envelope(self, name, raw):
        extra = ENVELOPE.get(name, {})
        return dict(raw=raw, rcpt_to=extra.get("rcpt_to", ["support@example.com"]), hints=extra.get("hints"),
                    intake="test", clock=lambda: FROZEN)

    def _runner(self, name):
        """The world's runner, or one whose settings carry the fixture's `settings`."""
        changed = ENVELOPE.get(name, {}).get("settings")
        if not changed:
            return self.runner
        from connector.pipeline.runner import Runner
        from connector.pipeline.services import Services
        services = copy.copy(self.services)
        settings = self.services.settings
        services.settings = dataclasses.replace(settings, values={**settings.values, **changed})
        services.trusted_authserv_ids = Services.trusted_ids(services.settings)
        return Runner(services)

    def decide(self, name, raw=None):
        from connector.store.spool import unsaved_entry
        raw = raw if raw is not None else (FIXTURES / f"{name}.eml").read_bytes()
        args = self._envelope(name, raw)
        return self._runner(name).dry_run(unsaved_entry(args.pop("raw"), **args))

    def file(self, name, raw=None):
        from connector.store.spool import store_message
        raw = raw if raw is not None else (FIXTURES / f"{name}.eml").read_bytes()
        args = self._envelope(name, raw)
        return self._runner(name).process(store_message(args.pop("raw"), **args))


def fired(ctx):
    """The link of the routing table that fired (None when a step before route decided)."""
    links = [t["link"] for t in ctx.trace if t["step"] == "route" and t["result"] != "no"]
    assert len(links) <= 1, ctx.trace
    return links[0] if links else None
