"""HTML mail: quote structure first (blockquote, gmail_quote, divRplyFwdMsg, ...), then text."""

from pathlib import Path

import pytest

from connector.mail.html import html_to_text
from connector.mail.parse import parse_message
from connector.reply import load_extractor

MAIL = Path(__file__).parent / "fixtures" / "mail"


@pytest.fixture(scope="module")
def extractor():
    return load_extractor([])


@pytest.mark.parametrize("name, reply", [
    ("gmail_html_reply.eml", "It works again, thank you!\nSee the status page (https://status.example.com/vpn)."),
    ("outlook_html_reply.eml", "Tuesday is fine.\n\nErik"),
    ("thunderbird_html_reply.eml", "Done, thanks.\n\n- toner replaced\n- paper jam cleared"),
])
def test_html_reply_uses_the_quote_structure(extractor, name, reply):
    parsed = parse_message((MAIL / name).read_bytes())
    assert extractor.extract_message(parsed) == reply


def test_plain_mail_uses_text_rules(extractor):
    parsed = parse_message(b"From: a@example.com\nSubject: x\n\nYes.\n\nOn 04/19/2011 07:10 AM, Roman wrote:\n> q\n")
    assert extractor.extract_message(parsed) == "Yes."


def test_html_quote_only_keeps_its_text(extractor):
    raw = b"From: a@example.com\nContent-Type: text/html\n\n<blockquote type=\"cite\">Only old text</blockquote>"
    assert extractor.extract_message(parse_message(raw)) == "Only old text"


def test_apple_mail_cite_and_outlook_appendonsend():
    html = ('<div>New</div><div><br><blockquote type="cite"><div>On 1 May, Bob wrote:</div>old</blockquote></div>'
            '<div id="appendonsend"></div><hr><div>From: Bob<br>old outlook</div>')
    assert html_to_text(html, drop_quotes=True) == "New"
    assert "old outlook" in html_to_text(html)


def test_readable_text_from_html():
    html = ("<html><head><title>t</title><style>.a{}</style><script>x()</script></head><body>"
            "<h1>Title</h1><p>One &amp; two&nbsp;words</p><ol><li>first</li><li>second</li></ol>"
            "<p>Mail <a href=\"mailto:a@example.com\">a@example.com</a> or <a href=\"https://x.example\">site</a>"
            "</p><!-- comment --><pre>  keep\n  indent</pre></body></html>")
    assert html_to_text(html) == ("Title\n\nOne & two\u00a0words\n\n1. first\n2. second\n\n"
                                  "Mail a@example.com or site (https://x.example)\n\n  keep\n  indent")


def test_broken_html_never_raises():
    for html in ("<div><blockquote>unclosed", "</p></div><<>>", "<a href=x>" * 500, "<![CDATA[x"):
        html_to_text(html, drop_quotes=True)


def test_indent_blockquote_without_quote_bar_is_the_senders_text():
    # Gmail's "indent" button: a blockquote with border:none, not history
    html = ('<div>Steps I tried:</div><blockquote style="margin:0 0 0 40px;border:none;padding:0px">'
            '<div>restart the printer</div></blockquote><div>Ann</div>')
    assert "restart the printer" in html_to_text(html, drop_quotes=True)
    cited = '<div>New</div><blockquote type="cite" style="border:none">old</blockquote>'
    assert html_to_text(cited, drop_quotes=True) == "New"


@pytest.mark.parametrize("html", [
    # Gmail puts a forward inside gmail_quote, Apple Mail inside blockquote type=cite
    '<div dir="ltr">Please handle this.<br><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
    '---------- Forwarded message ---------<br>From: Bob &lt;bob@client.example&gt;<br>Subject: Broken<br>'
    '</div><br><div dir="ltr">My device is broken.</div></div></div>',
    'Please handle this.<br><div><br><blockquote type="cite"><div>Begin forwarded message:</div><br>'
    '<div><b>From: </b>Bob &lt;bob@client.example&gt;</div><br><div>My device is broken.</div></blockquote></div>',
])
def test_html_only_forward_keeps_the_forwarded_mail(extractor, html):
    raw = ("From: a@example.com\nSubject: Fwd: Broken\nContent-Type: text/html; charset=utf-8\n\n" + html).encode()
    reply = extractor.extract_message(parse_message(raw))
    assert reply.startswith("Please handle this.") and "My device is broken." in reply


def test_text_after_an_unclosed_head_is_kept():
    # html.parser skipped everything after a <head> nobody closed (bounce reports write it)
    html = "<html><head><title>Test Bounce Message</title>\n<body><b>Test HTML part here.</b></body></html>"
    assert html_to_text(html) == "Test HTML part here."


def test_hostile_unclosed_tags_convert_and_keep_the_text_around_them():
    # 60 KB of '<a ' took 74 s in html.parser (quadratic); the text before it is what a reader sees
    assert html_to_text("<p>Hello</p>" + "<a " * 20_000) == "Hello"
    assert html_to_text("<p>Hello</p>" + "<div>" * 50_000 + "deep") == "Hello\n\ndeep"


def test_html_only_mail_is_parsed_once_for_both_texts(extractor, monkeypatch):
    import connector.mail.html as html_module
    runs = []
    convert = html_module._convert
    monkeypatch.setattr(html_module, "_convert", lambda html: runs.append(len(html)) or convert(html))
    raw = (b"From: a@example.com\nContent-Type: text/html\n\n<div>New words</div>"
           b"<blockquote type=\"cite\">Old words</blockquote>")
    parsed = parse_message(raw)
    assert extractor.extract_message(parsed) == "New words"
    assert "Old words" in parsed.text
    assert len(runs) == 1
