"""Bounces the rules were not written on (issue 12): hand-written reports in the shapes of
the providers and MTAs the corpus has few of -- an Exchange NDR in German and one in French
without delivery-status fields, Gmail's spam block, Yahoo's text report, qmail, Exim behind
a block list, Postfix, Sendmail, Courier, Outlook.com's "550 5.5.0 ... mailbox unavailable",
a hosted "552 5.2.2 mailbox full", Office 365's spam rejection, a policy refusal, a German
delay warning, a German auto-reply without RFC 3834 headers and a customer forwarding a
bounce. Each file's expected kind, recipient, reason, status and hardness is in
tests/data/bounces/manifest.jsonl; they are read black-box through `connector parse --json`
and scored apart by `make eval` ("bounces: unseen")."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

UNSEEN = Path(__file__).parent / "data" / "bounces"
CASES = [json.loads(line) for line in (UNSEEN / "manifest.jsonl").read_text().splitlines() if line.strip()]
CONNECTOR = [sys.executable, "-m", "connector"]


@pytest.fixture(scope="module")
def parsed():
    done = subprocess.run(CONNECTOR + ["parse", "--json", *(str(UNSEEN / c["file"]) for c in CASES)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    infos = [json.loads(line) for line in done.stdout.splitlines()]
    return {Path(info["file"]).name: info for info in infos}


def test_at_least_ten_unseen_bounces():
    assert sum(c["kind"] == "bounce" for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_unseen_report_is_understood(parsed, case):
    info = parsed[case["file"]]
    assert info["automatic_kind"] == (None if case["kind"] == "not_bounce" else case["kind"])
    assert info["is_bounce"] == (case["kind"] in ("bounce", "delayed"))
    if not info["is_bounce"]:
        assert info["bounce"] is None
        return
    recipients = info["bounce"]["recipients"]
    assert [r["address"] for r in recipients] == case["recipients"]
    first = recipients[0]
    if case["kind"] == "delayed":
        assert first["permanent"] is False and first["hard"] is False
        return
    assert first["reason"] == case["reason"]
    if case["status"]:
        assert first["status"] == case["status"]
    assert first["hard"] is case["hard"]
