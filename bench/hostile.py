"""Filing time of hostile mail (issue 9): what one stranger's message costs the worker.

    .venv/bin/python bench/hostile.py [--only NAME ...] [--repeat N] [--json]

Each case is generated here (nothing is read from disk), stored in the spool of
a throw-away installation in a temp dir, and filed by the real pipeline
(`Runner.process`: parse, decide, write, outbox rows). Printed per case: the
time of `parse_message` alone, the time of the whole filing, the outcome
(`done` or `shunted` with its reason) and what the parse noted as capped.
`plain_4k` is the ordinary mail beside them; the `reply_*` cases are bodies that
once made reply extraction backtrack (their tests check the outcome, not the time).
Times are the worst of `--repeat` runs: the worst case is what blocks the
queue. Absolute figures move on a shared machine; compare runs made together.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connector.mail.parse import parse_message  # noqa: E402

HEAD = b"From: Ann <ann@acme.example>\r\nTo: support@example.test\r\nMessage-ID: <%s@acme.example>\r\n"


def mail(name, headers=b"", body=b"Hello.\r\n", subject=b"Hostile mail"):
    return HEAD % name.encode() + b"Subject: " + subject + b"\r\n" + headers + b"\r\n" + body


def many_parts(count=20_000):
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count))
    return mail("parts", b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n",
                parts + b"--b--\r\n")


def named_attachments(count=20_000):
    parts = b"".join(b'--b\r\nContent-Type: application/octet-stream; name="f%d.bin"\r\n'
                     b'Content-Disposition: attachment; filename="f%d.bin"\r\n\r\nAAAA\r\n' % (i, i)
                     for i in range(count))
    return mail("attachments", b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n",
                parts + b"--b--\r\n")


def nested_forwards(depth=1_000):
    return mail("forwards", b"Content-Type: message/rfc822\r\n",
                b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: inner\r\n\r\ntext\r\n")


def nesting(depth=1_000):
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(depth))
    return mail("nesting", b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n",
                body + b"innermost\r\n")


def uuencoded(size=6_400_000, end=True, begins=1):
    line = b"M" + b"86)C" * 15 + b"\r\n"            # 45 bytes of data per line
    block = line * (size // 61)
    parts = [b"begin 644 file%d.bin\r\n" % i + block + (b"`\r\nend\r\n" if end else b"") for i in range(begins)]
    return mail("uu", body=b"See the file.\r\n" + b"".join(parts))


def references(count=100_000):
    refs = b" ".join(b"<r%d@acme.example>" % i for i in range(count))
    return mail("refs", b"References: " + refs + b"\r\n")


def many_headers(count=50_000):
    return mail("headers", b"".join(b"X-Filler-%d: value\r\n" % i for i in range(count)))


def long_ticket_number(digits=5_000):
    return mail("digits", subject=b"[Ticket #" + b"9" * digits + b"] help")


CHARSETS = (b"hex", b"uu", b"base64", b"zlib", b"bz2", b"rot13", b"idna", b"undefined", b"utf-\x008")


def hostile_charsets():
    words = b" ".join(b"=?%s?q?=FF?=" % c for c in CHARSETS)
    return mail("charsets", subject=words)


def charset_hint(codec=b"hex"):
    return (b"From: J\xf6rg <joerg@acme.example>\r\nTo: support@example.test\r\nSubject: Dr\xfccker\r\n"
            b"Content-Type: text/plain; charset=" + codec + b"\r\n\r\nHallo.\r\n")


def uu_non_ascii():
    return mail("uu8", body=b"begin 644 x.bin\r\nM\xe4\xf6\xfc\xe4\xf6\xfc\r\n`\r\nend\r\n")


def injection_subject():
    return mail("inject", subject=b"=?utf-8?q?hi=0D=0A=0D=0AClick_http://evil.example?=")


def injection_long():
    return mail("inject2", subject=b"=?utf-8?q?" + b"x" * 200 + b"=0D=0AX-Injected:_1=0D=0A=0D=0AClick_http://evil.example?=")


def quote_headers(count=1_000):
    """Many 'On ... wrote:' blocks (found by bench/fuzz.py): reply extraction rescans the rest per block."""
    block = b"On 2012-10-16 at 17:02 , Someone <someone@example.com> wrote:\r\n\r\n> Some quoted text\r\n\r\n"
    return mail("quotes", body=b"Hello world.\r\n\r\n" + block * count)


def plain_4k():
    """An ordinary support request: the baseline the hostile cases compare with."""
    return mail("plain", body=(b"An ordinary line of a support request, long enough to be typical.\r\n" * 60)[:3800])


CASES = {
    "plain_4k": plain_4k,
    "reply_on_lines_2000": lambda: mail("r1", body=(b"On " + b"1 " * 2000 + b"\r\n") * 20 + b"> q\r\n" * 200
                                        + (b"x" * 5000 + b"\r\n") * 5),
    "reply_blanks_80000": lambda: mail("r2", body=b" " * 80000 + b"\r\n"),
    "reply_wrote_4000": lambda: mail("r3", body=b"John Smith wrote:\r\n" * 4000 + b"> q\r\n"),
    "reply_names_5000": lambda: mail("r4", body=b"John <a@b.example> " * 5000 + b"\r\n"),
    "parts_20000": many_parts,
    "attachments_20000_named": named_attachments,
    "nesting_1000": nesting,
    "nested_forwards_1000": nested_forwards,
    "uuencode_6.4MB": uuencoded,
    "uuencode_6.4MB_no_end": lambda: uuencoded(end=False),
    "uuencode_100_begins_no_end": lambda: uuencoded(size=64_000, end=False, begins=100),
    "uuencode_20000_begins_no_end": lambda: mail("uub", body=b"begin 644 x\r\nM\r\n" * 20_000),
    "references_100000": references,
    "headers_50000": many_headers,
    "ticket_5000_digits": long_ticket_number,
    "charsets_in_words": hostile_charsets,
    "charset_hint_hex": charset_hint,
    "charset_hint_rot13": lambda: charset_hint(b"rot13"),
    "uuencode_non_ascii": uu_non_ascii,
    "injection_subject": injection_subject,
    "injection_long_subject": injection_long,
    "quote_headers_1000": quote_headers,
    "quote_headers_2000": lambda: quote_headers(2_000),
}


def installation(workdir):
    (workdir / "config").mkdir()
    ini = workdir / "connector.ini"
    ini.write_text("[connector]\npublic_address = support@example.test\nnotifications_address = notify@example.test\n"
                   "database = var/connector.db\ntriage_notice_to = triage@example.test\n"
                   "[outbound]\nmode = maildir\n")
    return ini


def measure(runner, raw, repeat):
    from connector.store.models import Processing
    from connector.store.spool import store_message
    parse_s = file_s = 0.0
    for run in range(repeat):
        raw = b"X-Bench-Run: %d\r\n" % run + raw   # a new message each run, not a duplicate
        start = time.perf_counter()
        try:
            parsed = parse_message(raw)
        except Exception as exc:   # what the code before issue 9 did with some of these
            parsed = SimpleNamespace(subject=f"(parse raised {type(exc).__name__})", from_addr="")
        parse_s = max(parse_s, time.perf_counter() - start)
        spool_id = store_message(raw, mail_from="ann@acme.example", rcpt_to=["support@example.test"],
                                 intake="bench")
        start = time.perf_counter()
        runner.process(spool_id)
        file_s = max(file_s, time.perf_counter() - start)
        row = Processing.get(Processing.spool_id == spool_id)
    capped = getattr(parsed, "capped", None)
    return {"size": len(raw), "parse_s": round(parse_s, 3), "filing_s": round(file_s, 3), "state": row.state,
            "action": row.action, "reason": (row.reason or "")[:70], "subject": parsed.subject[:40],
            "from": parsed.from_addr, "capped": capped}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the worst is printed")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args()
    from connector.app import open_services
    from connector.log import setup_logging
    from connector.pipeline.runner import Runner
    from connector.settings import load_settings
    with tempfile.TemporaryDirectory() as tmp:
        setup_logging("error", stream=open("/dev/null", "w"))
        runner = Runner(open_services(load_settings(installation(Path(tmp))), synchronous="normal"))
        for name in args.only or CASES:
            result = measure(runner, CASES[name](), args.repeat)
            if args.json:
                print(json.dumps({"case": name, **result}), flush=True)
            else:
                print(f"{name:28} {result['size']:>9} B  parse {result['parse_s']:7.3f} s  "
                      f"filing {result['filing_s']:7.3f} s  {result['state']:8} {result['action'] or ''} "
                      f"{result['reason']}  subject={result['subject']!r} capped={result['capped']}", flush=True)


if __name__ == "__main__":
    main()
