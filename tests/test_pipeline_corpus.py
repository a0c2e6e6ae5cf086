"""Every message of the shared MIME corpus (malformed, exotic charsets, bounces,
auto-replies) through the real pipeline on a real SQLite store: none may be
shunted, each ends in exactly one outcome, and the original bytes are kept."""

import os
from pathlib import Path

import pytest

from conftest import Instance
from connector.pipeline.runner import Runner
from connector.settings import load_settings
from connector.store.models import Processing, SpoolEntry

CORPUS = Path(os.environ.get("CONNECTOR_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")


@pytest.mark.skipif(not (CORPUS / "mime").is_dir(), reason=f"no corpus at {CORPUS}")
def test_every_corpus_message_is_processed_without_a_shunt(tmp_path):
    from connector.app import open_services
    from connector.store.spool import store_message
    inst = Instance(tmp_path, 2500)
    settings = load_settings(inst.ini)
    runner = Runner(open_services(settings))
    files = sorted((CORPUS / "mime").glob("*.eml")) + sorted((CORPUS / "bounces").glob("*.eml"))[:150]
    ids = {store_message(path.read_bytes(), mail_from=None, rcpt_to=["support@example.com"], intake="test"): path
           for path in files}
    runner.drain()
    outcomes = {p.spool_id: p for p in Processing.select()}
    shunted = {ids[i].name: p.reason for i, p in outcomes.items() if p.state != "done"}
    assert shunted == {}
    assert set(outcomes) == set(ids)                          # every message has exactly one outcome
    for spool_id, path in list(ids.items())[::25]:            # and its original bytes, unchanged
        assert bytes(SpoolEntry.get_by_id(spool_id).raw) == path.read_bytes()
    actions = {p.action for p in outcomes.values()}
    assert {"new_ticket", "triage", "ignored_automatic"} <= actions
