"""Outgoing mail as files (`[outbound] mode = maildir`): the demo's and the tests' relay."""

import os
import socket
import time
from pathlib import Path

from connector.outbound.replies import ACCEPTED_LOCALLY, no_reply


class MaildirTransport:
    """Writes each mail as a file in `maildir/new` (tmp, fsync, rename)."""

    def __init__(self, path):
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def send(self, mail_from, rcpts, raw):
        """{recipient: Reply}: all accepted once the file is on disk, all deferred if it is not."""
        name = f"{time.time():.6f}.{os.getpid()}_{os.urandom(4).hex()}.{socket.gethostname()}"
        envelope = (f"X-Envelope-From: <{mail_from}>\r\n"
                    + "".join(f"X-Envelope-To: <{a}>\r\n" for a in rcpts)).encode()
        data = (envelope + raw).replace(b"\r\n", b"\n")
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path / "new" / name)
        except OSError as exc:
            return {a: no_reply(f"maildir {self.path}: {exc}") for a in rcpts}
        return {a: ACCEPTED_LOCALLY for a in rcpts}

    def close_idle(self):
        pass

    def close(self):
        pass
