"""systemd's notify protocol (sd_notify(3)), the few lines of it the daemon needs.

With `Type=notify` systemd sets $NOTIFY_SOCKET (a unix datagram socket,
`@` for the abstract namespace) and, with `WatchdogSec=`, $WATCHDOG_USEC.
The daemon sends READY=1 once SMTP listens and its children run,
WATCHDOG=1 from the intake's event loop (so a stuck loop stops the pings and
systemd restarts the service), STOPPING=1 when it begins to shut down.
Without $NOTIFY_SOCKET every call does nothing.
"""

import os
import socket

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"


class Notifier:
    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # ping twice per period, as sd_watchdog_enabled(3) advises
        self.watchdog_interval = int(usec) / 2e6 if wanted else None

    def send(self, *lines):
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self.address)
            except OSError:
                pass  # systemd gone or socket removed: nothing to tell
