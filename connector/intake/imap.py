"""IMAP intake: one scan of a scanner's folders (seed 003), crash-safe.

Messages are addressed by UID only, never by sequence number. Per folder:

    select -> UIDVALIDITY changed? start the folder over (nothing is filed twice:
              imported messages are known by their sha256)
           -> candidates: `all_since_last` = UIDs above the last one scanned;
                          `unread` = UNSEEN UIDs not already decided;
                          plus earlier failures and unfinished imports
           -> per chunk (CHUNK_FIRST messages, then about CHUNK_BYTES, at most CHUNK):
              FETCH BODY.PEEK[] (never sets \\Seen by itself) -> rules (the headers
              alone unless a rule reads the body) -> spool commit (synchronous=FULL)
              -> state rows, with the outcomes of the previous chunk's actions
              -> \\Seen, move, delete (a command per group)
              The spool commit and state rows run in a filer thread while this thread
              fetches and decides the next chunk.

Flags, moves and deletes happen only after the spool has committed the
message: a crash in between makes the next scan see it again, and the
pipeline files it as a `duplicate`. A message that cannot be fetched or
decided is recorded `failed`, kept on the server and retried; it never
blocks the rest of the folder.
"""

import hashlib
import logging
import re
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from imapclient import SEEN, IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from imapclient.response_parser import parse_fetch_response

from connector.log import get_logger
from connector.scanners.rules import Decision, decide
from connector.store.models import SCANNER_DONE, SCANNER_FAILED, SCANNER_IMPORTED, SCANNER_LEFT, database
from connector.store.scanners import ScannerState
# the spool's own row builder and multi-row insert (what its GroupCommitter uses): a chunk
# is one statement, not a savepoint per message
from connector.store.spool import store_messages

log = get_logger("imap")

CHUNK = 1000           # messages fetched, stored and flagged together, at most
CHUNK_FIRST = 100      # the first chunk of a folder, before the size of its mail is known
CHUNK_BYTES = 64 << 20  # later chunks hold about this many bytes: large mail, fewer messages
TIMEOUT = 60.0         # socket timeout for IMAP commands, seconds
TOKEN_TIMEOUT = 60.0   # token_command, seconds
IDLE_MAX = 25 * 60     # RFC 2177: re-issue IDLE at least every 29 minutes
MAX_RECONNECTS = 5     # per scan, for messages whose fetch breaks the connection
IDLE_POLL = 1.0        # seconds between looks at the stop event while idling
IMAPLIB_LOGGER = "imapclient.imaplib"  # where imapclient sends imaplib's debug messages
FETCH_BODY_RE = re.compile(rb"\d+ \(UID (\d+) BODY\[\] \{\d+\}\Z")  # `* N FETCH (UID u BODY[] {size}`


class ScanError(Exception):
    """A scanner cannot work right now (login, TLS, token): logged, retried with backoff."""


class Fenced(Exception):
    """The scanner's lease is gone (`connector.singletons`): it stops before its next fetch
    or mailbox action, so two nodes never scan one mailbox at once."""


@dataclass
class ScanResult:
    fetched: int = 0
    imported: int = 0
    known: int = 0       # already imported (a rescan); nothing done
    left: int = 0
    failed: int = 0
    acted: int = 0       # messages flagged, moved or deleted
    spool_ids: list = field(default_factory=list, repr=False)  # what this scan put into the spool
    folder_errors: dict = field(default_factory=dict)          # folder -> why it could not be read

    def as_json(self):
        return {k: v for k, v in self.__dict__.items() if k != "spool_ids"}


def tls_context(cfg):
    """None for `security: none` (loading the CA certificates costs ~40 ms a connection)."""
    if cfg.security == "none":
        return None
    context = ssl.create_default_context()
    if not cfg.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def access_token(cfg):
    """Run the scanner's token_command; its stdout is the access token."""
    try:
        done = subprocess.run(["/bin/sh", "-c", cfg.token_command], capture_output=True, timeout=TOKEN_TIMEOUT,
                              cwd=cfg.base_dir, check=False)
    except subprocess.TimeoutExpired:
        raise ScanError(f"token_command did not finish within {TOKEN_TIMEOUT:.0f}s") from None
    token = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode == 0 and not token:
        raise ScanError("token_command printed no token (exit 0, empty output)")
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise ScanError(f"token_command failed (exit {done.returncode}){': ' + detail if detail else ''}")
    return token


def connect(cfg, timeout=TIMEOUT):
    """A logged-in IMAPClient for `cfg` (a ScannerConfig)."""
    context = tls_context(cfg)
    try:
        client = IMAPClient(cfg.host, cfg.port, ssl=cfg.security == "ssl", ssl_context=context, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ScanError(f"TLS certificate of {cfg.host} not accepted: {exc.verify_message} "
                        "(verify_certificate: false only for a server you trust)") from None
    except (OSError, IMAPClientError) as exc:
        raise ScanError(f"cannot connect to {cfg.host}:{cfg.port}: {exc}") from None
    try:
        if cfg.security == "starttls":
            try:
                client.starttls(context)
            except ssl.SSLCertVerificationError as exc:
                raise ScanError(f"TLS certificate of {cfg.host} not accepted: {exc.verify_message} "
                                "(verify_certificate: false only for a server you trust)") from None
            except (OSError, IMAPClientError) as exc:
                raise ScanError(f"STARTTLS with {cfg.host} failed: {exc}") from None
        if cfg.auth == "xoauth2":
            client.oauth2_login(cfg.mailbox or cfg.username, access_token(cfg))
        else:
            client.login(cfg.username, cfg.secret())
    except ScanError:
        logout(client)
        raise
    except (OSError, IMAPClientError) as exc:
        logout(client)
        raise ScanError(f"login to {cfg.host} as {cfg.mailbox or cfg.username} failed: {_text(exc)}") from None
    quiet_imaplib(client)
    log.info("imap.connected", scanner=cfg.name, host=cfg.host, port=cfg.port, security=cfg.security,
             auth=cfg.auth, user=cfg.mailbox or cfg.username)
    return client


def quiet_imaplib(client):
    """imapclient sets imaplib's debug level to 5, so that imaplib formats a debug message for
    every line it reads, the repr of every message body fetched included, for a logger that
    drops it (the cost of a fetch's parse, doubled); it stays at 5 when that logger is on."""
    if not logging.getLogger(IMAPLIB_LOGGER).isEnabledFor(logging.DEBUG):
        client._imap.debug = 0  # imaplib.IMAP4.debug (no public accessor)


def _text(exc):
    """An IMAP error as text: imaplib passes the server's answer as bytes (b'[AUTH...] ...')."""
    args = exc.args
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0].decode("utf-8", "replace")
    text = str(exc)
    if text.startswith(("b'", 'b"')) and text.endswith(text[1]):
        return text[2:-1]
    return text


def logout(client):
    """Log out, or at least close the connection (a client already broken cannot log out)."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


def fetch_bodies(client, uids):
    """{uid: raw message or None} of `uids`, by UID FETCH BODY.PEEK[] (never sets \\Seen).

    The answers of the usual shape, `* N FETCH (UID u BODY[] {size}` + the literal + `)`,
    are read straight from imaplib's data: imapclient's general response parser cost a
    third of a first scan's time. Any other answer (unsolicited FLAGS, UID after the body,
    a server's own order) goes through that parser.
    """
    imap = client._imap  # the imaplib.IMAP4 under the client (no public accessor)
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), "(BODY.PEEK[])")
    if typ != "OK":
        raise IMAPClientError(b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace"))
    bodies = _plain_bodies(data)
    if bodies is None:
        bodies = {uid: item.get(b"BODY[]") for uid, item in parse_fetch_response(data, False, True).items()}
    return bodies


def _plain_bodies(data):
    """{uid: raw} when every answer has the usual shape, else None."""
    bodies, items = {}, iter(data)
    for item in items:
        match = FETCH_BODY_RE.match(item[0]) if isinstance(item, tuple) and len(item) == 2 else None
        if match is None or next(items, None) != b")":
            return None
        bodies[int(match.group(1))] = item[1]
    return bodies


def _next_chunk(fetched_bytes, count):
    """Messages in the next chunk: about CHUNK_BYTES, after `count` messages of `fetched_bytes`."""
    return max(1, min(CHUNK, CHUNK_BYTES * max(count, 1) // max(fetched_bytes, 1)))


class Scanner:
    """Scans the folders of one scanner over a connected client."""

    def __init__(self, cfg, clock=time.time, connector=None, may_work=None):
        self.cfg = cfg
        self.may_work = may_work  # whether the scanner still holds its lease (None: no lease)
        self.state = ScannerState(cfg.name, clock)
        self.connector = connector or connect
        self.client = None
        self.reconnects = 0
        self.acted = []  # outcome rows of the last chunk's mailbox actions, recorded with the next chunk's

    def scan(self, client):
        """One pass over every folder. A message whose fetch breaks the connection costs a
        reconnect (at most MAX_RECONNECTS a scan); `self.client` is the client in use after."""
        self.client, self.reconnects = client, 0
        result = ScanResult()
        for folder in self.cfg.folders:
            self._fence()
            try:
                self.scan_folder(self.client, folder, result)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                # A folder the server refuses (deleted, renamed, a typo in `folders`) is
                # reported; it never keeps the scanner's other folders from being read.
                result.folder_errors[folder] = _text(exc)
                log.error("imap.folder_failed", scanner=self.cfg.name, folder=folder, error=_text(exc))
        self.state.success()
        if result.folder_errors:
            self.state.error("; ".join(f"folder {f}: {e}" for f, e in result.folder_errors.items()))
        log.info("imap.scanned", scanner=self.cfg.name, **result.as_json())
        return result

    def _fence(self):
        if self.may_work is not None and not self.may_work():
            raise Fenced(self.cfg.name)

    def scan_folder(self, client, folder, result):
        info = client.select_folder(server_folder_name(client, folder))
        uidvalidity = int(info[b"UIDVALIDITY"])
        saved = self.state.folder(folder)
        last = saved.last_uid
        if saved.uidvalidity != uidvalidity:
            if saved.uidvalidity is not None:
                log.warning("imap.uidvalidity_changed", scanner=self.cfg.name, folder=folder,
                            old=saved.uidvalidity, new=uidvalidity, last_uid=last)
            self.state.reset_folder(folder, uidvalidity)
            last = 0
        if self.cfg.scan == "all_since_last":
            uids = {uid for uid in client.search(["UID", f"{last + 1}:*"]) if uid > last}
        else:
            final = self.state.final_uids(folder, uidvalidity)
            uids = {uid for uid in client.search(["UNSEEN"]) if uid not in final}
        todo = sorted(uids | self.state.pending_uids(folder, uidvalidity))
        self.acted = []
        # Two chunks in flight: while the filer thread commits one, this thread fetches and
        # decides the next (the commit's fsync and the server's time overlap the Python work,
        # which stays on one thread); a chunk is flagged, moved or deleted only once its
        # commit has returned.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scanner-{self.cfg.name}-filer") as filer:
            start, size, filing = 0, CHUNK_FIRST, None
            try:
                while start < len(todo):
                    # the chunks shrink towards the end of the folder: only the last one's
                    # filing is not overlapped by a fetch
                    chunk = todo[start:start + max(min(size, (len(todo) - start) // 2), CHUNK_FIRST)]
                    start += len(chunk)
                    self._fence()
                    bodies, errors = self._fetch(folder, chunk)
                    result.fetched += len(bodies)
                    plans = self._decide(folder, bodies, errors)
                    if filing is not None:
                        self._act(folder, filing.result(), result)
                    filing = filer.submit(self._file, folder, uidvalidity, chunk, bodies, errors, plans, result)
                    size = _next_chunk(sum(map(len, bodies.values())), len(chunk))
                if filing is not None:
                    self._act(folder, filing.result(), result)
                    filing = None
            finally:
                if filing is not None:
                    wait([filing])  # a fetch failed meanwhile: what it commits is flagged next scan
                filer.submit(self._close, folder, uidvalidity).result()

    def _close(self, folder, uidvalidity):
        """In the filer thread, at the end of a folder: the last chunk's action outcomes, then
        its database connection closed."""
        try:
            if self.acted:
                with database.atomic():
                    self._record_acted(folder, uidvalidity)
        finally:
            database.close()

    def _reconnect(self, folder, exc):
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS:
            raise exc
        log.warning("imap.reconnect", scanner=self.cfg.name, folder=folder, error=str(exc))
        logout(self.client)
        self.client = self.connector(self.cfg)
        self.client.select_folder(server_folder_name(self.client, folder))

    def _fetch(self, folder, uids):
        """{uid: raw} and {uid: error}; a failing message is isolated, never fails the rest,
        even one whose fetch makes the server drop the connection (Dovecot's BYE)."""
        try:
            data = fetch_bodies(self.client, uids)
        except (IMAPClientAbortError, OSError) as exc:
            self._reconnect(folder, exc)
            if len(uids) == 1:
                return {}, {uids[0]: f"fetch broke the connection: {exc}"}
            return self._one_by_one(folder, uids)
        except IMAPClientError as exc:
            if len(uids) == 1:
                return {}, {uids[0]: f"fetch failed: {exc}"}
            return self._one_by_one(folder, uids)
        bodies, errors = {}, {}
        for uid in uids:
            if uid not in data:
                continue  # expunged meanwhile
            raw = data[uid]
            if raw is None:
                errors[uid] = "fetch returned no body"
            else:
                bodies[uid] = bytes(raw)
        return bodies, errors

    def _one_by_one(self, folder, uids):
        bodies, errors = {}, {}
        for uid in uids:
            one, err = self._fetch(folder, [uid])
            bodies.update(one)
            errors.update(err)
        return bodies, errors

    def _decide(self, folder, bodies, errors):
        """{uid: (Decision, sha256)} of `bodies`; a message the rules cannot read goes to `errors`."""
        mlog = log.bind(scanner=self.cfg.name, folder=folder)  # bound once: a proxy's bind per line costs
        plans = {}  # uid -> (decision, sha256)
        for uid, raw in bodies.items():
            try:
                plans[uid] = (decide(self.cfg, folder, raw), hashlib.sha256(raw).hexdigest())
                mlog.info("imap.fetched", uid=uid, size=len(raw), rule=plans[uid][0].rule)
            except Exception as exc:  # a message the rules cannot read is kept and reported
                errors[uid] = f"cannot decide: {type(exc).__name__}: {exc}"
        return plans

    def _file(self, folder, uidvalidity, uids, bodies, errors, plans, result):
        """In the filer thread: commit to the spool and record `uids` (fetched as `bodies` and
        decided as `plans`, or failed with `errors`); returns {uid: Decision} of the messages
        to act on."""
        mlog = log.bind(scanner=self.cfg.name, folder=folder)  # bound once: a proxy's bind per line costs
        existing = self.state.rows(folder, uidvalidity, uids=uids)
        known = self.state.known_imports({sha for d, sha in plans.values() if d.imports})
        store, act, rows = [], [], []
        for uid, (decision, sha) in plans.items():
            row = existing.get(uid)
            if row is not None and row.spool_id is not None and row.state in (SCANNER_IMPORTED, SCANNER_FAILED):
                decision.imports = True               # stored before; its actions did not finish
                act.append(uid)
            elif decision.imports and sha in known:
                result.known += 1
                mlog.info("imap.already_imported", uid=uid, spool_id=known[sha])
                # flagged \\Seen like any import, but not moved or deleted again: the copy in
                # another scanned folder must not travel in a loop
                plans[uid] = (Decision(rule=decision.rule, imports=True), sha)
                rows.append({"uid": uid, "state": SCANNER_IMPORTED, "rule": decision.rule, "sha256": sha,
                             "spool_id": known[sha]})
                act.append(uid)
            elif decision.imports:
                store.append(uid)
            elif decision.touches_mailbox:
                act.append(uid)
            else:
                result.left += 1
                rows.append({"uid": uid, "state": SCANNER_LEFT, "rule": decision.rule})
        spool_ids = self._store(mlog, store, bodies, plans)
        for uid in store:
            rows.append({"uid": uid, "state": SCANNER_IMPORTED, "rule": plans[uid][0].rule,
                         "sha256": plans[uid][1], "spool_id": spool_ids[uid]})
        for uid, error in errors.items():
            mlog.error("imap.message_failed", uid=uid, error=error)
            rows.append({"uid": uid, "state": SCANNER_FAILED, "error": error})
        result.imported += len(store)
        result.spool_ids.extend(spool_ids[uid] for uid in store)
        result.failed += len(errors)
        with database.atomic():
            self._record_acted(folder, uidvalidity)
            self.state.record(folder, uidvalidity, rows)
            self.state.advance(folder, uidvalidity, max(uids))
            self.state.count_imported(len(store))
        return {uid: plans[uid][0] for uid in act + store}

    def _act(self, folder, decisions, result):
        """The mailbox actions of a committed chunk; their outcomes are recorded with the next
        chunk's rows (one commit less a chunk): lost in a crash, the rows stay `imported` and
        the next scan repeats the actions, as before a commit."""
        if not decisions:
            return
        self._fence()  # committed, not flagged: the next holder acts on it (its state row says imported)
        outcome = self._mailbox(self.client, folder, decisions)
        result.acted += sum(1 for error in outcome.values() if error is None)
        self.acted = [
            {"uid": uid, "state": SCANNER_FAILED, "error": error} if error else
            {"uid": uid, "state": SCANNER_DONE if decisions[uid].imports else SCANNER_LEFT,
             "rule": decisions[uid].rule}
            for uid, error in outcome.items()]

    def _record_acted(self, folder, uidvalidity):
        """The outcomes of the last chunk's mailbox actions (inside the caller's transaction)."""
        acted, self.acted = self.acted, []
        self.state.finish(folder, uidvalidity, [row["uid"] for row in acted if row["state"] == SCANNER_DONE])
        self.state.record(folder, uidvalidity, [row for row in acted if row["state"] != SCANNER_DONE])

    def _store(self, mlog, uids, bodies, plans):
        """Commit the messages to the spool, in one transaction; returns {uid: spool id}."""
        if not uids:
            return {}
        ids = dict(zip(uids, store_messages([(bodies[uid], plans[uid][0].hints) for uid in uids],
                                            intake=self.cfg.intake)))
        for uid in uids:
            mlog.info("imap.stored", uid=uid, spool_id=ids[uid], rule=plans[uid][0].rule)
        return ids

    def _mailbox(self, client, folder, decisions):
        """\\Seen, then moves and deletes, a command per group; returns {uid: error or None}."""
        outcome = {uid: None for uid in decisions}
        seen = sorted(uid for uid, d in decisions.items() if d.imports or d.mark_read)
        self._group(client, folder, "flag", seen, outcome, lambda uids: client.add_flags(uids, [SEEN], silent=True))
        moves = {}
        for uid, decision in decisions.items():
            if decision.move_to and outcome[uid] is None:
                moves.setdefault(decision.move_to, []).append(uid)
        for target, uids in sorted(moves.items()):
            self._group(client, folder, "move", sorted(uids), outcome, lambda u, t=target: self._move(client, u, t),
                        target=target)
        deletes = sorted(uid for uid, d in decisions.items() if d.delete and outcome[uid] is None)
        self._group(client, folder, "delete", deletes, outcome, lambda uids: self._delete(client, uids))
        return outcome

    def _group(self, client, folder, what, uids, outcome, command, **fields):
        if not uids:
            return
        try:
            command(uids)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            log.error("imap.action_failed", scanner=self.cfg.name, folder=folder, action=what, uids=uids,
                      error=str(exc), **fields)
            for uid in uids:
                outcome[uid] = f"{what} failed: {exc}"
            return
        event = {"flag": "imap.flagged", "move": "imap.moved", "delete": "imap.deleted"}[what]
        log.info(event, scanner=self.cfg.name, folder=folder, uids=uids, **fields)

    def _move(self, client, uids, target):
        target = server_folder_name(client, target)
        if not client.folder_exists(target):
            client.create_folder(target)
            log.info("imap.folder_created", scanner=self.cfg.name, folder=target)
        if client.has_capability("MOVE"):
            client.move(uids, target)
        else:
            client.copy(uids, target)
            self._delete(client, uids)

    def _delete(self, client, uids):
        client.delete_messages(uids, silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()


def server_folder_name(client, name):
    """`Processed/Invoices` as the server spells it: a `/` in the configuration is the
    hierarchy separator, translated when the server uses another one (Dovecot's `.`)."""
    if "/" not in name:
        return name
    try:
        listed = client.list_folders("", "INBOX") or client.list_folders("", "%")
        delimiter = listed[0][1] if listed else None
    except IMAPClientAbortError:
        raise
    except IMAPClientError:
        return name
    if isinstance(delimiter, bytes):
        delimiter = delimiter.decode()
    if not delimiter or delimiter == "/":
        return name
    return name.replace("/", delimiter)


def _announced_before_idle(client):
    """Whether the server announced new mail with its answer to IDLE (before "+ idling").

    A server tells of mail that came since the last command in the next
    command's answer; for IDLE, imaplib files those untagged lines away while
    it waits for the continuation, and idle_check() never sees them.
    """
    pending = client._imap.untagged_responses  # imaplib's store of untagged answers (no public API)
    exists, recent = pending.pop("EXISTS", None), pending.pop("RECENT", None)
    return bool(exists) or any(int(count or 0) for count in recent or ())


def _more_than(responses, exists):
    """Whether untagged `responses` announce more messages than the `exists` the SELECT counted."""
    return any(len(r) > 1 and r[1] == b"EXISTS" and int(r[0]) > exists for r in responses)


def _forget_answers_of_select(client):
    """Drop the EXISTS / RECENT lines the SELECT and NOOP answered with: they describe the
    folder as already seen, not news; left in imaplib's store they read as mail announced
    to IDLE (and every wait returned at once: a scan loop on an unchanged mailbox)."""
    pending = client._imap.untagged_responses
    for key in ("EXISTS", "RECENT"):
        pending.pop(key, None)


def wait_for_mail(client, cfg, stop, last_uid=0, max_wait=None):
    """Until new mail may be there: IMAP IDLE on the first folder when the server offers
    it and the scanner allows it, else sleep `interval`. Returns early when `stop` is set,
    and at once when mail above `last_uid` arrived between the scan and the IDLE."""
    wait = cfg.interval if max_wait is None else min(cfg.interval, max_wait)
    if not (cfg.idle and client.has_capability("IDLE")):
        stop.wait(wait)
        return "interval"
    folder = server_folder_name(client, cfg.folders[0])
    try:
        info = client.select_folder(folder)
    except IMAPClientAbortError:
        raise
    except IMAPClientError:  # reported by the scan; poll the other folders every `interval`
        stop.wait(wait)
        return "interval"
    if int(info.get(b"UIDNEXT") or 0) != last_uid + 1:
        # Maybe mail above last_uid (or UIDs given up since): look. Mail that comes during
        # the SEARCH is announced in its answer (EXISTS), which IDLE never repeats: select
        # again, so that IDLE reports whatever came after the look.
        if any(uid > last_uid for uid in client.search(["UID", f"{last_uid + 1}:*"])):
            return "pending"
        info = client.select_folder(folder)
    # Mail delivered after the SELECT is told in the answer to the next command; IDLE's own
    # answer may not tell it (Dovecot waits for its next mailbox check), so ask with a NOOP.
    if _more_than(client.noop()[1], int(info.get(b"EXISTS") or 0)):
        log.info("imap.idle_wakeup", scanner=cfg.name, folder=cfg.folders[0])
        return "idle"
    _forget_answers_of_select(client)
    client.idle()
    deadline = time.monotonic() + min(wait, IDLE_MAX)
    reason = "interval"
    try:
        if _announced_before_idle(client):
            log.info("imap.idle_wakeup", scanner=cfg.name, folder=cfg.folders[0])
            return "idle"
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            responses = client.idle_check(timeout=min(IDLE_POLL, remaining))
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                log.info("imap.idle_wakeup", scanner=cfg.name, folder=cfg.folders[0])
                reason = "idle"
                break
    finally:
        client.idle_done()
    return reason
