"""A TCP proxy for fault injection from outside the product: it relays bytes
between a client and a server and, when the client sends a line matching a
trigger, calls `on_trigger` and drops that line (the server never sees it).

The IMAP kill test uses it to kill the daemon at the instant it sends its
first flag command, i.e. after the spool commit and before any \\Seen."""

import re
import socket
import threading


class FaultProxy:
    def __init__(self, upstream_port, trigger, on_trigger):
        self.upstream = ("127.0.0.1", upstream_port)
        self.trigger = re.compile(trigger)
        self.on_trigger = on_trigger
        self.armed = True
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, target, from_client):
        try:
            while data := source.recv(65536):
                if from_client and self.armed and self.trigger.search(data):
                    self.armed = False
                    self.on_trigger()
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
