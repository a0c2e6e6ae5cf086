"""The public commands, black-box: `connector strip-reply` and `connector parse`, as processes."""

import json
import subprocess
import sys
from pathlib import Path

MAIL = Path(__file__).parent / "fixtures" / "mail"
CONNECTOR = [sys.executable, "-m", "connector", "-c", "/nonexistent/connector.ini"]


def run(args, stdin=""):
    return subprocess.run(CONNECTOR + args, input=stdin, capture_output=True, text=True, timeout=60)


def test_strip_reply_from_stdin_and_file(tmp_path):
    body = "Thanks!\r\n\r\nOn Mon, Jan 1, 2024 at 10:00 AM Bob <b@example.com> wrote:\r\n> old\r\n"
    assert run(["strip-reply"], body).stdout == "Thanks!\n"
    path = tmp_path / "body.txt"
    path.write_text(body)
    assert run(["strip-reply", str(path)]).stdout == "Thanks!\n"


def test_strip_reply_jsonl_answers_each_line_as_it_comes():
    proc = subprocess.Popen(CONNECTOR + ["strip-reply", "--jsonl"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        for item, reply in [({"id": 1, "text": "Hi\n\n-- \nsig"}, "Hi"),
                            ({"id": "b", "text": "> only a quote"}, "> only a quote")]:
            proc.stdin.write(json.dumps(item) + "\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline()) == {"reply": reply}   # answered before the next input
        proc.stdin.write("not json\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["reply"] == "" and "error" in answer
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_strip_reply_with_an_admin_rule_folder(tmp_path):
    (tmp_path / "quotes.local.yaml").write_text(
        "rules:\n  - name: shop_footer\n    kind: signature\n    regex: '^Shop footer$'\n"
        "    samples: {match: ['Shop footer'], no_match: ['footer']}\n")
    result = run(["strip-reply", "--rules", str(tmp_path)], "Hello\nShop footer\nmore")
    assert result.stdout == "Hello\n"
    (tmp_path / "quotes.local.yaml").write_text("rules: [{name: x, kind: nope, regex: a}]\n")
    result = run(["strip-reply", "--rules", str(tmp_path)], "Hello")
    assert result.returncode != 0 and "kind 'nope'" in result.stderr


def test_parse_json_one_object_per_file_and_broken_files_do_not_stop_it():
    files = [MAIL / "attachments.eml", MAIL / "missing.eml", MAIL / "gmail_html_reply.eml"]
    result = run(["parse", "--json"] + [str(f) for f in files])
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["file"] for o in objects] == [str(f) for f in files]
    keys = {"file", "subject", "from_addr", "from_name", "to", "cc", "message_id", "text", "reply_text",
            "attachments", "is_auto_reply", "is_bounce", "automatic_kind", "bounce", "defects"}
    assert all(set(o) == keys for o in objects)
    first = objects[0]
    assert first["from_addr"] == "bob@example.com" and first["to"] == ["support@example.com"]
    assert first["attachments"][0] == {"name": "This is a test.pdf", "content_type": "application/pdf",
                                       "size": 13, "inline": False}
    assert objects[1]["defects"] and objects[1]["defects"][0].startswith("unreadable")
    assert objects[2]["reply_text"].startswith("It works again, thank you!")
    assert result.returncode == 1


def test_parse_human_output():
    result = run(["parse", str(MAIL / "latin1_raw_headers.eml")])
    assert result.returncode == 0
    assert "Drücker kaputt" in result.stdout and "-- reply --" in result.stdout
