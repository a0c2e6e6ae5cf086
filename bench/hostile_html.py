"""Filing cost of hostile and huge HTML mail: parse + reply extraction, in process.

    .venv/bin/python bench/hostile_html.py [--limit SECONDS]

Prints seconds per case (the median of 3 runs, one run for slow cases). The
cases are issue 9's: 60 KB of unclosed `<a `, a 5 MB HTML-only mail, deep
unclosed nesting. Speed is measured here, never asserted in tests.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.mail.parse import parse_message  # noqa: E402
from connector.reply import load_extractor  # noqa: E402

HEADERS = b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n"
CASES = {
    "60 KB of '<a '": "<p>Hello</p>" + "<a " * 20_000,
    "5 MB HTML-only mail": ("<div>Thanks, it works.</div><blockquote type=cite>"
                            + "<p>old <b>quoted</b> text &amp; more</p>\n" * 125_000 + "</blockquote>"),
    "50,000 unclosed <div>": "<div>" * 50_000 + "deep",
    "20,000 unclosed <table><tr><td>": "<table><tr><td>x" * 20_000,
}


def file_once(raw, extractor):
    started = time.perf_counter()
    extractor.extract_message(parse_message(raw))
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=5.0, help="one run only for cases slower than this")
    args = parser.parse_args()
    extractor = load_extractor([])
    for name, html in CASES.items():
        raw = HEADERS + html.encode()
        first = file_once(raw, extractor)
        runs = [first] if first > args.limit else [first] + [file_once(raw, extractor) for _ in range(2)]
        print(f"{name:34} {len(raw) / 1e6:6.2f} MB  {statistics.median(runs):8.3f} s")


if __name__ == "__main__":
    main()
