"""Issue 9.5: the auto-response is no spam relay. Limits per address (also a
non-ASCII one), per recipient domain and in all, per hour; no auto-response
when the site's own MTA says the From domain failed DMARC or SPF; every
suppressed auto-response is logged with its reason. Real daemon, real SMTP."""

import json

import pytest

from conftest import Instance, make_mail


def events(inst, name):
    lines = [json.loads(line) for line in inst.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def auto_responses(inst):
    return [o for o in inst.outbox() if o["kind"] == "auto_response"]


def start(tmp_path, sink, security=None, **ini):
    inst = Instance(tmp_path, sink.port, **ini)
    if security:
        with inst.ini.open("a") as ini_file:
            ini_file.write("[security]\n" + "".join(f"{k} = {v}\n" for k, v in security.items()))
    return inst.start()


@pytest.mark.parametrize("robot", ["robot@acme.example", "jörg@acme.example"])
def test_auto_responses_are_limited_per_address_and_hour(tmp_path, sink, robot):
    """jörg@ was never limited: the count compared JSON written with ensure_ascii=False."""
    inst = start(tmp_path, sink, connector__auto_responses_per_hour="2")
    try:
        for index in range(4):
            inst.send(make_mail(subject=f"Robot says {index}", sender=robot))
        inst.wait_processed(4)
        assert len(inst.tickets()) == 4                      # every mail is still filed
        assert [o["to"] for o in auto_responses(inst)] == [[robot]] * 2   # but only two answers
        suppressed = events(inst, "auto_response.suppressed")
        assert [(e["address"], e["reason"]) for e in suppressed] == [(robot, "address_limit")] * 2
    finally:
        inst.stop()


def test_forged_senders_get_few_answers_per_domain_and_in_all(tmp_path, sink):
    inst = start(tmp_path, sink, connector__auto_responses_per_domain_per_hour="3",
                 connector__auto_responses_total_per_hour="5")
    try:
        senders = [f"victim{i}@{domain}" for domain in ("one.example", "two.example") for i in range(4)]
        for index, sender in enumerate(senders):
            inst.send(make_mail(subject=f"Cheap pills http://spam.example/{index}", sender=sender))
        inst.wait_processed(len(senders))
        assert len(inst.tickets()) == len(senders)
        answered = [o["to"][0] for o in auto_responses(inst)]
        assert answered == senders[:3] + senders[4:6]      # 3 at one.example, then the total of 5
        reasons = [e["reason"] for e in events(inst, "auto_response.suppressed")]
        assert reasons == ["domain_limit", "total_limit", "total_limit"]
    finally:
        inst.stop()


def test_defaults_cut_the_forged_sender_flood(tmp_path, sink):
    """The probe's case with the shipped defaults: 25 forged addresses at one domain."""
    inst = start(tmp_path, sink)
    try:
        for index in range(25):
            inst.send(make_mail(subject=f"Cheap pills {index}", sender=f"v{index}@victim.example"))
        inst.wait_processed(25)
        assert len(auto_responses(inst)) == 10               # auto_responses_per_domain_per_hour
    finally:
        inst.stop()


AUTH = {
    "dmarc": "mx.example.com; dmarc=fail (p=reject) header.from={domain}",
    "spf": "mx.example.com; spf=fail smtp.mailfrom=someone@{domain}; dkim=none",
    "untrusted": "mx.evil.example; dmarc=fail header.from={domain}",
    "other domain": "mx.example.com; spf=fail smtp.mailfrom=bounces@list.example; dmarc=pass header.from={domain}",
    "garbage": "mx.example.com; dmarc=fail ((( header.from",
}


@pytest.mark.parametrize("case, answered, reason", [
    ("dmarc", False, "dmarc_fail"), ("spf", False, "spf_fail"), ("untrusted", True, None),
    ("other domain", True, None), ("garbage", True, None)])
def test_no_auto_response_when_the_trusted_mta_says_the_from_domain_failed(tmp_path, sink, case, answered, reason):
    inst = start(tmp_path, sink, security={"trusted_authserv_ids": "MX.example.com, mx2.example.com"})
    try:
        header = AUTH[case].format(domain="acme.example")
        inst.send(make_mail(subject="Forged?", sender="ann@acme.example",
                            headers={"Authentication-Results": header}))
        inst.wait_processed(1)
        assert len(inst.tickets()) == 1                      # filed either way
        assert len(auto_responses(inst)) == (1 if answered else 0)
        assert [e["reason"] for e in events(inst, "auto_response.suppressed")] == ([] if answered else [reason])
    finally:
        inst.stop()


def test_authentication_results_mean_nothing_without_trusted_ids(tmp_path, sink):
    inst = start(tmp_path, sink)
    try:
        inst.send(make_mail(subject="Forged?", headers={"Authentication-Results": AUTH["dmarc"].format(
            domain="acme.example")}))
        inst.wait_processed(1)
        assert len(auto_responses(inst)) == 1
    finally:
        inst.stop()
