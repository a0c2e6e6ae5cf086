"""Reply extraction policy (docs/reply-extraction.md), one test per decision."""

import pytest

from connector.reply import extract_reply, load_extractor
from test_fuzz import hang_guard


@pytest.fixture(scope="module")
def extractor():
    return load_extractor([])


def test_cuts_at_gmail_attribution(extractor):
    body = "Works now, thanks.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <m@example.com> wrote:\n\n> Hi\n"
    assert extractor.extract(body) == "Works now, thanks."


@pytest.mark.parametrize("header", [
    "Le 19 mars 2014 10:37, Cédric <c@example.fr> a écrit :",
    "Am 25.06.2015 um 10:55 schrieb Test user:",
    "El 19/03/2014 11:34, Juan <juan@example.es> escribió:",
    "W dniu 7 stycznia 2015 15:24 użytkownik Paweł <p@example.pl> napisał:",
    "2014-03-20 8:48 GMT+01:00 Rémi <r@example.com>:",
    "-----Original Message-----",
    "From: Bob <bob@example.com>\nSent: Monday, May 2, 2016 10:00 AM\nTo: Alice\nSubject: hi",
    "Von: Bob <bob@example.de>\nGesendet: Montag, 2. Mai 2016 10:00",
    "________________________________\nDe : Bob <bob@example.fr>\nEnvoyé : lundi 2 mai 2016 10:00",
])
def test_quote_headers_in_many_clients_and_languages(extractor, header):
    body = f"The new text.\n\n{header}\n\nThe old text, unquoted.\n"
    assert extractor.extract(body) == "The new text."


def test_signature_removed(extractor):
    assert extractor.extract("Fixed it.\n\n-- \nJane Doe\nACME Support\n") == "Fixed it."


@pytest.mark.parametrize("footer", ["Sent from my iPhone", "Get Outlook for iOS<https://aka.ms/o0ukef>",
                                    "Von meinem iPhone gesendet", "Sent from Mail for Windows 10"])
def test_device_footer_removed(extractor, footer):
    assert extractor.extract(f"On my way.\n\n{footer}\n") == "On my way."


def test_sentence_starting_like_a_footer_is_kept(extractor):
    body = "Here it is.\n\nSent from my desk, is much easier then my mobile phone."
    assert extractor.extract(body) == body


def test_closing_formula_is_kept(extractor):
    body = "Please call me back.\n\nRegards,\nJohn Doe"
    assert extractor.extract(body) == body


def test_quote_only_message_keeps_its_text(extractor):
    body = "-----Original Message-----\nFrom: bob@example.com\nSent: Today\n\nCheck this out!"
    assert extractor.extract(body) == body
    assert extractor.extract("> Hello.\n\n>another line") == "> Hello.\n\n>another line"


def test_forwarded_mail_keeps_forwarded_content(extractor):
    body = ("FYI, see below.\n\n---------- Forwarded message ----------\nFrom: bob@example.com\n"
            "Date: Tue, Sep 4, 2012 at 1:35 PM\nSubject: Order 42\n\nThe order is late.")
    assert extractor.extract(body) == body


def test_apple_forward_keeps_forwarded_content(extractor):
    body = "Please look.\n\nBegin forwarded message:\n\n> From: bob@example.com\n> Subject: Order\n>\n> Late."
    assert extractor.extract(body) == body


def test_reply_above_marker_cuts_everything_below(extractor):
    body = ("Thanks, that solved it.\n\n##- Please type your reply above this line -##\n\n"
            "Your ticket #42 has been updated.\nNo quote markers here at all.")
    assert extractor.extract(body) == "Thanks, that solved it."
    assert extractor.extract("Ok.\n> ##- Please type your reply above this line -##\n> old") == "Ok."


def test_reply_above_marker_beats_everything_else(extractor):
    body = "Hello. On 01/12/13, Tristan <t@example.com> wrote: -- REPLY ABOVE THIS LINE -- or visit us"
    assert extractor.extract(body) == "Hello."


def test_text_below_a_quote_is_kept(extractor):
    body = ("Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Abhishek wrote:\n> question?\n\n"
            "Here is the answer.\n\n> more quote\n")
    assert extractor.extract(body) == "Hi,\nHere is the answer."


def test_wrapped_quoted_line_stays_in_the_quote(extractor):
    body = "Blah\n\nOn Monday, 24 September, 2012 at 3:46 PM, bob wrote:\n\n> View (http://example.com/a\n_nonce=3dd518)\n>\n"
    assert extractor.extract(body) == "Blah"


def test_lone_quote_marker_line_between_text_is_text(extractor):
    body = "Visit us now...\n>>> >>>  http://www.domain.com <<<\nVisit our site by clicking the link above"
    assert extractor.extract(body) == body


def test_inline_answers_below_short_quoted_questions_are_kept(extractor):
    # an answer right below a short quoted line is not the wrapped rest of that line
    body = ("On 05/01/2026 10:00, John wrote:\n> Can you restart the server?\nDone.\n"
            "> And clear the cache?\nAlso done.\n")
    assert extractor.extract(body) == "Done.\nAlso done."


def test_lone_quoted_question_set_apart_by_blank_lines_is_a_quote(extractor):
    body = ("On 05/01/2026 10:00, John wrote:\n> Can you restart?\n\nDone.\n\n"
            "> And clear the cache?\n\nAlso done.\n\n> Thanks\n")
    assert extractor.extract(body) == "Done.\n\nAlso done."


def test_paragraphs_starting_with_on_are_kept(extractor):
    body = "On the surface, fine.\n\nOn average, this works.\nOn blah-blah"
    assert extractor.extract(body) == body


def test_crlf_and_empty_input(extractor):
    assert extractor.extract("Yes.\r\n\r\nOn 04/19/2011 07:10 AM, Roman wrote:\r\n> q\r\n") == "Yes."
    assert extractor.extract("") == ""
    assert extractor.extract("   \n") == ""


def test_module_level_extract_reply_uses_shipped_rules():
    assert extract_reply("Hi\n\n-- \nsig") == "Hi"


def test_pathological_input_is_extracted(extractor):
    """Speed is measured in bench/hostile.py (reply_*); here a hang fails the run (hang_guard)."""
    body = ("On " + "1 " * 2000 + "\n") * 20 + "> q\n" * 200 + ("x" * 5000 + "\n") * 5
    with hang_guard():
        text = extractor.extract(body)
    assert "> q" not in text and text.startswith("On 1 1") and text.endswith("x" * 5000)


@pytest.mark.parametrize("body, kept", [
    (" " * 80000 + "\n", ""),                      # leading blanks: possessive, no backtracking per footer
    ("John Smith wrote:\n" * 4000 + "> q\n", ("John Smith wrote:\n" * 3999).strip()),
    ("John <a@b.example> " * 5000 + "\n", ("John <a@b.example> " * 5000).strip()),
])
def test_long_adversarial_lines_are_extracted(extractor, body, kept):
    with hang_guard():
        assert extractor.extract(body) == kept
