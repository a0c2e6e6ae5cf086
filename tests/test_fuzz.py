"""Property and mutation tests (hypothesis) over parse, the whole decision and the
composition of outgoing mail, seeded from ../shared/corpus (mime/, replies/, bounces/)
and from the hostile fragments of issue 9.

For every input, `check` asserts:
- `parse_message` never raises, and no decoded value carries a control character;
- the pipeline's decision (the `replay --dry-run` path, on a tmp store holding two
  tickets) never raises;
- every mail it would send composes; no header we write contains CR, LF or NUL once
  decoded; each re-parses with the strict policy (`email.policy.SMTP`,
  raise_on_defect=True) to the headers we wrote, with the subject and recipients
  we meant;
- a per-message budget holds: the parser's work caps, and a generous wall-clock
  guard (HANG_GUARD_S) that only catches a hang, never a slow machine.

A bounded run is part of `make test` (FUZZ_EXAMPLES inputs); `bench/fuzz.py --minutes N`
runs the same `check` longer with random mutations. An input that breaks a property
becomes a fixture in tests/fixtures/fuzz/ (bench/fuzz.py writes it there), replayed here.
"""

import os
import re
import faulthandler
import time
from email import policy
from email.parser import Parser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Instance, make_mail
from connector.mail.parse import parse_message
from connector.outbound.compose import capped_subject

CORPUS = Path(os.environ.get("CONNECTOR_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
FIXTURES = Path(__file__).parent / "fixtures" / "fuzz"
FUZZ_EXAMPLES = int(os.environ.get("CONNECTOR_FUZZ_EXAMPLES", "1000"))
MAX_SEED_BYTES = 200_000       # larger corpus mails are for bench/fuzz.py
MAX_INPUT_BYTES = 400_000      # mutations that grow a mail stop here
HANG_GUARD_S = 30              # per input: a hang, not a speed measurement
STRICT = policy.SMTP.clone(raise_on_defect=True)
CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
BREAKS_RE = re.compile("[\r\n\x00]")
# An address as RFC 5322 spells it (dot-atom or quoted local part, dot-atom domain).
# The parser keeps malformed ones too (postmaster\\@a@b, ann@example.): the recipients
# of those are checked for control characters, not for a faithful re-parse.
ATOM = r'[^\s@"\\<>()\[\],;:.]+'
ADDR_SPEC_RE = re.compile(rf'^(?:{ATOM}(?:\.{ATOM})*|"(?:[^"\\]|\\.)*")@{ATOM}(?:\.{ATOM})*$')

# What strangers send: the cases of issue 9 and their relatives.
HOSTILE_VALUES = [
    b"=?utf-8?q?hi=0D=0A=0D=0AClick_http://evil.example?=",
    b"=?utf-8?q?Jane=0D=0AX-Injected:_1?= <jane@example.com>",
    b"=?utf-8?q?" + b"x" * 200 + b"=0D=0ABcc:_victim@else.example?=",
    b"=?utf-8?b?aGkNCkJjYzogdmljdGltQGVsc2UuZXhhbXBsZQ==?=",
    b"=?hex?q?=FF?=", b"=?uu?q?=FF?=", b"=?base64?b?/w==?=", b"=?zlib?q?=FF?=", b"=?bz2?q?x?=",
    b"=?rot13?q?nop?=", b"=?idna?q?=FF?=", b"=?undefined?q?=FF?=", b"=?utf-\x008?q?=FF?=",
    b"=?utf-8?q?=1B]0;owned=07=1B[2J=00=C2=9B?=", b"\x1b[31mred\x1b[0m", b"a\rBcc: x@evil.example",
    b"[Ticket #1] follow-up", b"Re: [Ticket #2] =?utf-8?q?=0D=0A?=", b"[Ticket #" + b"9" * 5000 + b"]",
    b"<t1.0.0@example.com> <" + b"r" * 2000 + b"@x>", b"Dr\xfccker \xe4\xf6", b"=?utf-8?q?=?utf-8?q?",
    b"\"quoted \\\" name\" <ann@acme.example>", b"undisclosed-recipients:;", b"ann@acme.example, , <>",
    b"<" + b"><".join(b"r%d@x" % i for i in range(300)) + b">",
]
HEADER_NAMES = [b"Subject", b"From", b"To", b"Cc", b"Reply-To", b"References", b"In-Reply-To", b"Message-ID",
                b"Content-Type", b"Content-Disposition", b"Auto-Submitted", b"X-Loop", b"Sender"]
CHARSETS = [b"hex", b"uu", b"base64", b"zlib", b"bz2", b"rot13", b"idna", b"undefined", b"utf-\x008", b"x-unknown",
            b"utf-16", b"iso-2022-jp"]
FRAGMENTS = [b"\r\n", b"\n", b"\r", b"\x00", b"\x1b", b"\xff\xfe", b"\r\n\r\n", b"\n ", b"=?", b"?=", b"--",
             b"\nbegin 644 x.bin\n", b"\nend\n", b"; boundary=\"b\"", b"\n--b\n", b"\n--b--\n",
             b"Content-Type: multipart/mixed; boundary=b\n", b"Content-Type: message/rfc822\n\n",
             b"Content-Transfer-Encoding: base64\n", b"Content-Transfer-Encoding: x-uuencode\n", b"<a ",
             b"=\n", b"=0D=0A", b"filename*=utf-8''a%0D%0Ab"]


def _corpus_seeds():
    files = []
    for folder in ("mime", "bounces", "replies"):
        files += sorted((CORPUS / folder).rglob("*.eml"))
    seeds = [p.read_bytes() for p in files if p.stat().st_size <= MAX_SEED_BYTES]
    for body in sorted((CORPUS / "replies").rglob("*.in.txt"))[:60]:
        seeds.append(make_mail(subject="Re: [Ticket #1] question", body=body.read_text("utf-8", "replace"))
                     .as_bytes())
    return seeds


SEEDS = _corpus_seeds() if (CORPUS / "mime").is_dir() else []
SEEDS += [make_mail(subject="Help", sender="ann@acme.example").as_bytes(),
          make_mail(subject="Re: [Ticket #1] thanks", sender="ann@acme.example").as_bytes(),
          make_mail(subject="Re: [Ticket #1] answer", sender="jane@example.com").as_bytes()]


# -- mutations: each takes the mail and a random.Random-like source -----------

def _head_end(raw):
    match = re.search(rb"\r?\n\r?\n", raw)
    return match.start() if match else len(raw)


def set_header(raw, rnd):
    """A hostile value in a header, replacing its first occurrence or added on top."""
    name, value = rnd.choice(HEADER_NAMES), rnd.choice(HOSTILE_VALUES)
    if name == b"Content-Type" and rnd.random() < 0.5:
        value = b"text/plain; charset=" + rnd.choice(CHARSETS)
    pattern = re.compile(rb"(?im)^" + name + rb":[^\n]*(?:\n[ \t][^\n]*)*")
    head_end = _head_end(raw)
    match = pattern.search(raw, 0, head_end)
    if match:
        return raw[:match.start()] + name + b": " + value + raw[match.end():]
    return name + b": " + value + b"\r\n" + raw


def set_charset(raw, rnd):
    return re.sub(rb"(?i)charset=\"?[-\w.:]+\"?", b"charset=" + rnd.choice(CHARSETS), raw, count=rnd.randint(1, 3))


def insert_fragment(raw, rnd):
    at = rnd.randint(0, len(raw))
    return raw[:at] + rnd.choice(FRAGMENTS) + raw[at:]


def flip_bytes(raw, rnd):
    data = bytearray(raw)
    for _ in range(rnd.randint(1, 8)):
        if data:
            data[rnd.randrange(len(data))] = rnd.choice(b"\r\n\x00\x1b\x7f\x85\x9b\xff:;=?\"<>@ \t-")
    return bytes(data)


def truncate(raw, rnd):
    return raw[:rnd.randint(0, len(raw))]


def repeat_slice(raw, rnd):
    """A slice of the mail repeated: many parts, headers, references or nested levels."""
    if not raw:
        return raw
    start = rnd.randrange(len(raw))
    piece = raw[start:start + rnd.randint(1, 200)]
    times = rnd.randint(2, max(2, min(2000, MAX_INPUT_BYTES // (4 * len(piece)))))
    return raw[:start] + piece * times + raw[start:]


def nest(raw, rnd):
    """The mail wrapped in many levels of multipart or message/rfc822."""
    depth = rnd.randint(2, 200)
    if rnd.random() < 0.5:
        opening = b"".join(b"--n%d\r\nContent-Type: multipart/mixed; boundary=n%d\r\n\r\n" % (i, i + 1)
                           for i in range(depth))
        return (b"From: ann@acme.example\r\nSubject: nested\r\nContent-Type: multipart/mixed; boundary=n0\r\n\r\n"
                + opening + raw)
    return b"From: ann@acme.example\r\nSubject: fwd\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * depth + raw


def splice(raw, rnd):
    other = rnd.choice(SEEDS)
    return raw[:_head_end(raw)] + other[_head_end(other):]


MUTATIONS = (set_header, set_header, set_header, set_charset, insert_fragment, flip_bytes, truncate,
             repeat_slice, nest, splice)


def mutate(raw, rnd, rounds=None):
    for _ in range(rounds if rounds is not None else rnd.randint(1, 4)):
        raw = rnd.choice(MUTATIONS)(raw, rnd)[:MAX_INPUT_BYTES]
    return raw


# -- the properties ------------------------------------------------------------

class hang_guard:
    """After `seconds` on one input, print every thread's stack and end the run: a hang fails
    loudly. A watchdog of its own (faulthandler), not SIGALRM, which the product's own time
    budget (connector.timebudget) uses while it extracts reply text."""

    def __init__(self, seconds=HANG_GUARD_S):
        self.seconds = seconds

    def __enter__(self):
        faulthandler.dump_traceback_later(self.seconds, exit=True)

    def __exit__(self, *exc):
        faulthandler.cancel_dump_traceback_later()


class World:
    """A tmp installation: settings, services, a store with tickets 1 and 2."""

    def __init__(self, path):
        from connector.app import open_services
        from connector.pipeline.runner import Runner
        from connector.settings import load_settings
        from connector.store.spool import store_message
        inst = Instance(path, 2500, connector__triage_notice_to="triage@example.com",
                        connector__add_recipients_from_headers="yes")
        self.services = open_services(load_settings(inst.ini), synchronous="off")
        self.runner = Runner(self.services)
        for subject in ("First question", "Second question"):
            raw = make_mail(subject=subject, sender="ann@acme.example").as_bytes()
            self.runner.process(store_message(raw, rcpt_to=["support@example.com"], intake="test"))


def assert_clean_parse(parsed):
    values = [parsed.subject, parsed.from_name, parsed.from_addr, parsed.message_id, *parsed.to, *parsed.cc,
              *parsed.reply_to, *parsed.references, *parsed.in_reply_to, *(a.name for a in parsed.attachments)]
    bad = [v for v in values if CONTROL_RE.search(v)]
    assert not bad, f"control characters in decoded values: {bad!r}"


def _strict_headers(raw, whole):
    """(name, decoded value) of `raw`'s header block, parsed with the strict policy."""
    text = raw.decode("utf-8", "surrogateescape")   # RFC 6532: internationalized addresses in UTF-8
    if whole:   # a mail we wrote entirely: its body too
        msg = Parser(policy=STRICT).parsestr(text)
        msg.get_payload(decode=True)
    else:       # a redistribution keeps the original's body, defects and all
        msg = Parser(policy=STRICT).parsestr(text, headersonly=True)
    return msg, [(name.lower(), str(value)) for name, value in msg.items()]


def assert_sound_outgoing(raw, subject, to, whole, from_name):
    head = raw[:raw.index(b"\r\n\r\n")] if b"\r\n\r\n" in raw else raw
    lines = head.split(b"\r\n")
    names = [line.split(b":", 1)[0].decode("ascii", "replace").lower() for line in lines if line[:1] not in b" \t"]
    assert all(line.endswith(b"\r") is False and b"\n" not in line for line in lines)
    msg, headers = _strict_headers(raw, whole)
    assert [n for n, _ in headers] == names, "the strict parse sees other header fields than we wrote"
    ours = [(n, v) for n, v in headers if n in ("from", "to", "cc", "reply-to", "subject", "message-id",
                                               "in-reply-to", "references", "x-loop", "auto-submitted")]
    assert not [(n, v) for n, v in ours if BREAKS_RE.search(v)], ours
    assert str(msg["subject"]) == capped_subject(subject)
    assert msg["from"].addresses[0].display_name.split() == from_name.split()   # a phrase: runs of space are one
    if to and all(ADDR_SPEC_RE.match(a) for a in to):
        unquoted = [a.replace('"', "") for a in to]   # "a b"@x and a b@x are one address to the reader
        assert [a.addr_spec.replace('"', "") for a in msg["to"].addresses] == unquoted


def compose_all(world, ctx, raw):
    """Every mail the decision plans, composed as `apply` does; yields (raw, subject, to, whole, from name)."""
    from connector.outbound import compose
    from connector.store.models import AUTO_RESPONSE, DISTRIBUTION
    services, parsed = world.services, ctx.parsed
    for out in ctx.plan.outgoing:
        if out.kind == AUTO_RESPONSE:
            yield compose.auto_response(parsed, out, services), out.subject, out.to, True, out.from_name
        elif out.kind == DISTRIBUTION:
            mail = compose.redistribution(raw, parsed, out, services)
            yield mail, compose.header_value("Subject", out.subject), out.to, False, out.from_name
        else:
            mail = compose.inbound_notice(out, services)
            yield mail, compose.header_value("Subject", out.subject), out.to, True, out.from_name


def check(world, raw):
    """Every property on one input; returns the seconds it took (parse, decide, compose)."""
    from connector.outbound import compose
    from connector.store.spool import unsaved_entry
    start = time.perf_counter()
    with hang_guard():
        assert_clean_parse(parse_message(raw))
        rcpt = ["support@example.com"] if len(raw) % 3 else ["notifications@example.com"]
        ctx = world.runner.dry_run(unsaved_entry(raw, mail_from=None, rcpt_to=rcpt, intake="fuzz"))
        for mail, subject, to, whole, from_name in compose_all(world, ctx, raw):
            assert_sound_outgoing(mail, subject, to, whole, compose.header_value("From", from_name))
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def world(tmp_path_factory, backend):
    return World(tmp_path_factory.mktemp("fuzz"))


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_mutated_corpus_mail_keeps_every_property(world, seed, rnd):
    check(world, mutate(seed, rnd))


@settings(max_examples=FUZZ_EXAMPLES // 3, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(head=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.binary(max_size=120) | st.sampled_from(HOSTILE_VALUES)),
                     max_size=8),
       body=st.binary(max_size=400))
def test_arbitrary_header_bytes_keep_every_property(world, head, body):
    raw = b"From: ann@acme.example\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in head) + b"\r\n" + body
    check(world, raw)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.eml")), ids=lambda p: p.name)
def test_fixture_found_by_fuzzing(world, path):
    check(world, path.read_bytes())


def test_every_corpus_seed_keeps_every_property(world):
    for raw in SEEDS:
        check(world, raw)
