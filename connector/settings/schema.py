"""Every INI key, declared once: section, name, type, default, one-line doc.

`connector.ini.example` is generated from this table (`connector
example-config`) and a test checks that the shipped file matches it, so the
code and the example never drift.
"""

from dataclasses import dataclass

# Recipient options (staff.yaml `receive`, seed 004), read as a ladder by `pipeline.distribute`.
RECEIVE_OFF, RECEIVE_ALL, RECEIVE_SUBSCRIBED = "off", "all", "subscribed"
RECEIVE_MANAGER, RECEIVE_ACCOUNT_MANAGER = "manager", "account_manager"
RECEIVE_OPTIONS = (RECEIVE_OFF, RECEIVE_ALL, RECEIVE_SUBSCRIBED, RECEIVE_MANAGER, RECEIVE_ACCOUNT_MANAGER)
MAX_PROCESSES = 8  # [worker] processes: the most filing processes (each has a wake-up socket)
AUTO_PROCESSES = 1  # [worker] processes = auto: this many, or one per core when fewer (README, "Measured")


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    kind: str  # str | address | addresses | bool | count | size | hostport | choice | path | file | float | processes
    #            | database
    default: str
    doc: str
    choices: tuple = ()
    attr: str = ""         # the settings attribute, when the bare name would clash (e.g. metrics_listen)
    restart: bool = False  # read once at start: a change needs a restart (config.restart_needed)

    @property
    def field(self):
        return self.attr or self.name


KEYS = (
    Key("connector", "public_address", "address", "support@example.com",
        "The Support Public Email Address: customers and staff write here; "
        "everything the connector sends comes from it."),
    Key("connector", "notifications_address", "address", "notifications@example.com",
        "The address automatic notices come from; mail sent to it is not routed "
        "to tickets but kept for review (inbound list)."),
    Key("connector", "internal_keyword", "str", "*123*",
        "A word in the subject that makes a mail internal (employees only, Not "
        "Public). Empty disables the keyword rule."),
    Key("connector", "sender_name", "choice", "employee",
        "employee: staff replies go out as \"Jane Doe <public_address>\"; "
        "unified: as \"response_from_name <public_address>\".",
        ("employee", "unified")),
    Key("connector", "response_from_name", "str", "Support",
        "Display name of the public address on automatic mail (and on staff "
        "replies when sender_name = unified)."),
    Key("connector", "ticket_tag", "str", "[Ticket #{number}]",
        "How a ticket number appears in subjects; must contain {number}. "
        "Incoming subjects are matched with a pattern derived from it."),
    Key("connector", "add_recipients_from_headers", "bool", "no",
        "Automatically find and add Ticket Recipients: addresses in "
        "To/Cc of filed mail join the ticket (employees as Employee Recipients, "
        "others as External Recipients), so a colleague a customer copied can "
        "reply and be filed.", ("yes", "no")),
    Key("connector", "auto_responses_per_hour", "count", "20",
        "At most this many auto-responses to one address per hour (a customer "
        "opening many tickets still gets each answer, a robot answering every "
        "answer is cut off); 0 never sends auto-responses."),
    Key("connector", "auto_responses_per_domain_per_hour", "count", "10",
        "At most this many auto-responses to the addresses of one domain per "
        "hour: forged senders at one victim domain get few answers."),
    Key("connector", "auto_responses_total_per_hour", "count", "100",
        "At most this many auto-responses in all per hour: a flood of forged "
        "senders cannot turn the public address into a spam relay."),
    Key("connector", "loop_reply_seconds", "float", "30",
        "A mail from an address we sent a mail of the same ticket to less than "
        "this many seconds before, answering one of our mails (its In-Reply-To is "
        "ours, or it threads on nothing), is a possible loop (a robot without "
        "automatic-mail headers answers in seconds, a person hardly ever); so "
        "is a mail repeating its sender's text on the ticket within the hour. "
        "0 leaves only the repeated text."),
    Key("connector", "loop_mails_per_ticket_per_hour", "count", "2",
        "At most this many automatic or loop-caused mails (the auto-response, "
        "notices and auto-emails a mail causes, copies of a possible loop, see "
        "loop_reply_seconds; not the auto-emails about a person's action) to one "
        "address for one ticket per hour; the mail is still filed, later copies "
        "are not sent."),
    Key("connector", "loop_mails_per_address_per_hour", "count", "10",
        "At most this many automatic or loop-caused mails to one address per "
        "hour, over all tickets, before a loop-caused copy is held back."),
    Key("connector", "notices_per_hour", "count", "30",
        "At most this many New Inbound Message Notices to one address per hour "
        "(the triage list keeps every item)."),
    Key("connector", "triage_notice_to", "addresses", "",
        "Where a New Inbound Message Notice goes when a mail lands in triage "
        "(comma-separated addresses; empty sends none). Never sent for bounces."),
    Key("connector", "triage_notice_cc", "addresses", "",
        "Also copied (Cc) on every New Inbound Message Notice, e.g. a team lead "
        "(comma-separated addresses; empty for none). The same limits as "
        "triage_notice_to apply to each address."),
    Key("connector", "message_time_budget", "float", "10",
        "Seconds the worker spends at most on the expensive pure steps of one "
        "message (HTML to text, reply extraction); past it the message is filed "
        "with its full text as reply text, rules_version 'not-extracted', and the "
        "queue moves on. 0: no budget."),
    Key("connector", "database", "database", "/var/lib/connector/connector.db",
        "SQLite database file (customer mail: created 0600). Its folder is the "
        "data directory: it also holds the spool (connector-spool.db) and the "
        "key that signs our Message-IDs (hmac.key), and the daemon's user must "
        "be able to write it; the systemd unit lets the service write only in "
        "/var/lib/connector. A relative path is relative to this file's folder. "
        "Or a PostgreSQL database: postgresql://user@host:5432/connector (TLS "
        "options as libpq takes them, e.g. ?sslmode=verify-full); the password "
        "from password_file, PGPASSWORD or ~/.pgpass.", restart=True),
    Key("connector", "password_file", "file", "",
        "With a PostgreSQL database: the file holding its password (first line; "
        "chmod 600). Empty: PGPASSWORD or ~/.pgpass, as for psql.",
        attr="database_password_file", restart=True),
    Key("connector", "data_dir", "file", "",
        "Folder of the key that signs our Message-IDs (hmac.key) and of the "
        "daemon's state file. Empty: the SQLite database's folder, or "
        "/var/lib/connector with a PostgreSQL database.", attr="data_folder", restart=True),
    Key("connector", "log_level", "choice", "info",
        "Lowest level of log events written to stdout.",
        ("debug", "info", "warning", "error")),
    Key("security", "trusted_authserv_ids", "str", "",
        "Comma-separated authserv-ids of your own MTA (the first word of the "
        "Authentication-Results headers it adds, e.g. mx.example.com). When "
        "such a header says the From domain failed DMARC or SPF, no "
        "auto-response is sent; headers from other hosts are ignored. Empty "
        "trusts none. Also what staff_authentication = authentication_results trusts."),
    Key("security", "staff_authentication", "choice", "from",
        "Who counts as staff (commands by mail, replies mailed to customers): "
        "from: the From address alone; authentication_results: an employee's "
        "address counts only when a header from trusted_authserv_ids says "
        "dmarc=pass, or dkim=pass aligned to the From domain; otherwise the mail "
        "goes to triage (unauthenticated_staff), not distributed, no command run.",
        ("from", "authentication_results")),
    Key("smtp", "listen", "hostport", "127.0.0.1:2525",
        "Address and port the SMTP/LMTP intake listens on.", restart=True),
    Key("smtp", "protocol", "choice", "smtp",
        "smtp for an MTA relaying to us, lmtp for Postfix's lmtp transport.",
        ("smtp", "lmtp"), restart=True),
    Key("smtp", "max_message_size", "size", "10000000",
        "Largest message accepted (bytes, or with a unit: 10M); larger ones are refused "
        "with 552. Keep it below what the relay takes (Postfix's message_size_limit, "
        "10240000 by default), with room for the headers our copies add: a mail accepted "
        "that the relay refuses reaches no employee.", restart=True),
    Key("smtp", "hostname", "str", "",
        "Name used in the SMTP greeting. Empty: the domain of public_address.", restart=True),
    Key("smtp", "backlog", "count", "1024",
        "Connections the kernel queues while the intake is busy (listen backlog, "
        "as Postfix sizes it; capped by net.core.somaxconn). A burst of senders "
        "beyond it waits for the kernel's SYN retries.", restart=True),
    Key("smtp", "idle_timeout", "float", "300",
        "Seconds a client may stay silent, in a command or inside DATA, before "
        "it gets 421 and is disconnected. A slow sender that keeps sending is "
        "never cut off (at least 1).", restart=True),
    Key("metrics", "listen", "hostport", "",
        "Address and port serving Prometheus metrics on /metrics and a health check on "
        "/healthz, e.g. 127.0.0.1:9325. Empty serves neither.",
        attr="metrics_listen", restart=True),
    Key("outbound", "mode", "choice", "smtp",
        "smtp: hand outgoing mail to the relay; maildir: write it as files "
        "(demo and testing).", ("smtp", "maildir")),
    Key("outbound", "relay", "hostport", "127.0.0.1:25",
        "SMTP relay that delivers outgoing mail (mode = smtp)."),
    Key("outbound", "maildir", "path", "/var/lib/connector/outgoing",
        "Maildir that receives outgoing mail as files (mode = maildir). A "
        "relative path is relative to this file's folder."),
    Key("outbound", "retry_initial", "float", "30",
        "Seconds before the first retry of a failed delivery; doubles after "
        "each failure."),
    Key("outbound", "retry_max", "float", "3600",
        "Longest wait between two delivery attempts, in seconds."),
    Key("outbound", "give_up_after", "float", "432000",
        "Seconds after which a mail that still cannot be delivered is marked "
        "failed (default 5 days, like an MTA)."),
    Key("outbound", "timeout", "float", "30",
        "Seconds to wait for the relay before an attempt counts as failed."),
    Key("outbound", "tls", "choice", "none",
        "Encryption to the relay: none; starttls (required: a relay that does "
        "not offer it is not used; port 587); tls (implicit TLS, port 465). "
        "The relay's certificate is always verified.", ("none", "starttls", "tls")),
    Key("outbound", "ca_file", "file", "",
        "CA certificate(s) (PEM) to verify the relay's certificate with. "
        "Empty: the system's trusted CAs."),
    Key("outbound", "username", "str", "",
        "Log in to the relay (SMTP AUTH) as this user; needs password_file "
        "and tls = starttls or tls. Empty: no login."),
    Key("outbound", "password_file", "file", "",
        "File holding the relay password (its first line); readable by the "
        "connector only (chmod 600). Read at each connection, never logged."),
    Key("outbound", "verp", "bool", "yes",
        "Send every mail with a VERP envelope sender, bounces+<outbox id>-<hmac>@<public "
        "domain>, so a bounce names the mail that bounced (connector why, blocks). "
        "no: the envelope sender is the From address; bounces are attributed by the "
        "Message-ID in the report only."),
    Key("bounces", "hard_block_hours", "count", "168",
        "Hours a hard bounce (user unknown, host unknown, has moved) blocks automatic "
        "mail to that address; a later successful delivery to it lifts the block early."),
    Key("retention", "raw_days", "count", "0",
        "Days after which the original bytes of filed mail and the bodies of "
        "delivered outgoing mail are dropped (the ticket's text, headers and "
        "statuses stay; mail still in review, shunted or unfiled is never "
        "touched). 0 keeps everything. `connector db vacuum` returns the "
        "space to the disk."),
    Key("worker", "processes", "processes", "auto",
        "How many filing processes the daemon runs side by side (1 to 8); each decides "
        "its own share of the spool (spool id modulo the count), all file in arrival "
        "order. auto: 1 (on 2 shared cores a second one cost more CPU per message than "
        "it gained; try 2 where cores are idle while mail waits).",
        attr="worker_processes", restart=True),
    Key("node", "name", "str", "",
        "This node's name, on every log line and in `connector nodes` (several "
        "connectors on one PostgreSQL database each need their own). Empty: the "
        "host name.", attr="node_name", restart=True),
    Key("node", "failover_seconds", "float", "30",
        "Seconds within which another node takes over the work of a node that dies or "
        "freezes (PostgreSQL, several nodes): the work that runs on one node at a time "
        "(each IMAP scanner, the deadline timer, pruning; a clean stop hands it over at "
        "once; each holder renews its lease every sixth of this), and the lease of the "
        "mail it was filing and of the outgoing mail it was sending (renewed while it "
        "works). More than 0.",
        restart=True),
    Key("connector", "auto_upgrade", "bool", "yes",
        "Whether `connector run` upgrades an older database schema itself when "
        "it starts (after a backup to <database>.bak-<version>). no: it refuses "
        "to start until you run `connector db upgrade`.", ("yes", "no"), restart=True),
)

RESTART_FIELDS = tuple(k.field for k in KEYS if k.restart)
WHERE = {k.field: f"[{k.section}] {k.name}" for k in KEYS}  # a key as the ini spells it
SECTIONS = tuple(dict.fromkeys(k.section for k in KEYS))
BY_NAME = {(k.section, k.name): k for k in KEYS}


def render_example():
    """The text of `connector.ini.example`: every key, its doc and default."""
    lines = [
        "; connector.ini: the email connector's configuration.",
        "; Every key is shown with its default. Copy this file to",
        "; /etc/connector/connector.ini and change what you need;",
        "; `connector check-config` tells you what is wrong, if anything.",
        ";",
        "; The server layout (README, \"Install on a server\"; systemd/connector.service):",
        ";   /etc/connector/connector.ini   this file",
        ";   /etc/connector/config/         staff.yaml, accounts.yaml, scanners.yaml",
        ";   /etc/connector/templates/      your changed mail templates (optional)",
        ";   /etc/connector/rules/          quotes.local.yaml (optional)",
        ";   /var/lib/connector/            database, spool, key: the `connector` user's",
        ";",
        "; rules/ and templates/ are looked up next to this file first, then",
        "; fall back file by file to the ones shipped with connector; config/",
        "; falls back only as a whole folder.",
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for key in KEYS:
            if key.section != section:
                continue
            lines.append(f"; {key.doc}")
            if key.restart:
                lines.append("; Read at start: a change takes effect at the next restart.")
            if key.choices:
                lines.append(f"; Values: {' | '.join(key.choices)}")
            lines.append(f"{key.name} = {key.default}")
    return "\n".join(lines) + "\n"
