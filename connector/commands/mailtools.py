"""Mail tools that need no configuration: `strip-reply` and `parse`.

    connector strip-reply [FILE] [--jsonl] [--rules DIR]
    connector parse [--json] FILE.eml [FILE.eml ...]

`strip-reply` prints the new text of a reply body (stdin or FILE). With
`--jsonl` it reads one {"id", "text"} object per line and answers one
{"reply": ...} line per input, in order, flushing after each: a long-running
process for batch evaluation, or for an administrator trying a rule.
`parse` shows what the connector sees in a message; with `--json` one object
per file and line, including `automatic_kind` (bounce, delayed, delivered,
feedback, auto_reply, challenge_response or null) and `bounce` (null, or the
failed recipients with status, reply code, reason, permanent, hard, and the
original Message-ID; see mail/bounce.py). A file that cannot be read is reported and the others go on.

Rules: the shipped rules/quotes.yaml, plus quotes.local.yaml from the rules/
folder next to the ini when that ini exists (-c), plus any --rules DIR (first).
"""

import json
import sys
from pathlib import Path

from connector.mail.automatic import classify
from connector.mail.parse import parse_message
from connector.reply import RuleError, load_extractor
from connector.reply.rules import SHIPPED_RULES_DIR

EX_OK = 0
EX_FAILED = 1
RULES_HELP = "also read quotes.yaml / quotes.local.yaml from DIR (tried first; repeatable)"


def register(subparsers):
    p = subparsers.add_parser("strip-reply", help="print the new text of a reply body (rules in rules/quotes.yaml)")
    p.add_argument("file", nargs="?", help="body text file (default: stdin)")
    p.add_argument("--jsonl", action="store_true",
                   help='read {"id", "text"} per line, answer {"reply": ...} per line, flushing each')
    p.add_argument("--rules", action="append", default=[], metavar="DIR", help=RULES_HELP)
    p.set_defaults(handler=strip_reply)

    p = subparsers.add_parser("parse", help="show what the connector sees in .eml files")
    p.add_argument("files", nargs="+", metavar="FILE.eml")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.add_argument("--rules", action="append", default=[], metavar="DIR", help=RULES_HELP)
    p.set_defaults(handler=parse_files)


def _extractor(args):
    """Rules from --rules, then the rules/ folder next to an existing ini, then the shipped ones."""
    dirs = [Path(d) for d in args.rules]
    config = getattr(args, "config", None)
    if config and Path(config).is_file():
        dirs.append(Path(config).resolve().parent / "rules")
    dirs.append(SHIPPED_RULES_DIR)
    return load_extractor(dirs)


def _read_text(path):
    data = sys.stdin.buffer.read() if path in (None, "-") else Path(path).read_bytes()
    return data.decode("utf-8", "replace")


def strip_reply(args):
    try:
        extractor = _extractor(args)
    except RuleError as exc:
        print(f"connector: rules: {exc}", file=sys.stderr)
        return EX_FAILED
    if not args.jsonl:
        try:
            text = _read_text(args.file)
        except OSError as exc:
            print(f"connector: {exc}", file=sys.stderr)
            return EX_FAILED
        print(extractor.extract(text))
        return EX_OK
    source = open(args.file, "rb") if args.file not in (None, "-") else sys.stdin.buffer
    out = sys.stdout
    try:
        for raw_line in source:
            line = raw_line.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                item = json.loads(line)
                text = item.get("text") if isinstance(item, dict) else None
                if not isinstance(text, str):
                    raise ValueError('expected an object with a string "text"')
                answer = {"reply": extractor.extract(text)}
            except ValueError as exc:   # a bad line gets an answer too, so lines stay in step
                answer = {"reply": "", "error": str(exc)}
            out.write(json.dumps(answer, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return EX_OK


def describe(path, raw, extractor):
    """The `parse --json` object for one message."""
    parsed = parse_message(raw)
    auto = classify(parsed)
    return {
        "file": str(path),
        "subject": parsed.subject,
        "from_addr": parsed.from_addr,
        "from_name": parsed.from_name,
        "to": parsed.to,
        "cc": parsed.cc,
        "message_id": parsed.message_id,
        "text": parsed.text,
        "reply_text": extractor.extract_message(parsed),
        "attachments": [{"name": a.name, "content_type": a.content_type, "size": a.size, "inline": a.inline}
                        for a in parsed.attachments],
        "is_auto_reply": auto.is_auto_reply,
        "is_bounce": auto.is_bounce,
        "automatic_kind": auto.kind,
        "bounce": auto.report.as_json() if auto.is_bounce and auto.report else None,
        "defects": parsed.defects,
    }


def _failed(path, exc):
    return {"file": str(path), "subject": "", "from_addr": "", "from_name": "", "to": [], "cc": [],
            "message_id": "", "text": "", "reply_text": "", "attachments": [], "is_auto_reply": False,
            "is_bounce": False, "automatic_kind": None, "bounce": None, "defects": [f"unreadable: {type(exc).__name__}: {exc}"]}


def _print_human(info):
    print(f"== {info['file']}")
    for key in ("subject", "from_addr", "from_name", "to", "cc", "message_id", "is_auto_reply", "is_bounce",
                "automatic_kind"):
        value = info[key]
        print(f"{key:14} {', '.join(value) if isinstance(value, list) else value}")
    for failed in (info["bounce"] or {}).get("recipients", []):
        print(f"{'failed':14} {failed['address']} {failed['reason']} {failed['status'] or ''} "
              f"{'hard' if failed['hard'] else ''}".rstrip())
    for att in info["attachments"]:
        print(f"{'attachment':14} {att['name'] or '(no name)'} {att['content_type']} {att['size']} bytes"
              f"{' inline' if att['inline'] else ''}")
    for defect in info["defects"]:
        print(f"{'defect':14} {defect}")
    print("-- text --")
    print(info["text"].rstrip())
    print("-- reply --")
    print(info["reply_text"].rstrip())
    print()


def parse_files(args):
    try:
        extractor = _extractor(args)
    except RuleError as exc:
        print(f"connector: rules: {exc}", file=sys.stderr)
        return EX_FAILED
    status = EX_OK
    for path in args.files:
        try:
            info = describe(path, Path(path).read_bytes(), extractor)
        except Exception as exc:  # one broken file never stops the others
            info, status = _failed(path, exc), EX_FAILED
        if args.json:
            print(json.dumps(info, ensure_ascii=False), flush=True)
        else:
            _print_human(info)
    return status
