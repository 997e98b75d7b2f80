"""Slow HTTP clients, for the connection-guard test and benchmark: each holds
connections open and sends a header line a byte at a time, never finishing
its request (slowloris). Connections the server closes are opened again, at
most `reopen_per_s` a second per client, so the pressure stays on; every
count is kept. Runs on its own thread until stop(); bounded by `seconds`
whatever happens.

Sources are loopback addresses (127.0.0.2, 127.0.0.3...): Linux answers for
all of 127.0.0.0/8, so one machine is many clients to the server.
"""
import errno
import resource
import selectors
import socket
import threading
import time


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


class SlowClients:
    def __init__(self, port, sources, per_source, seconds, trickle_s=1.0, reopen_per_s=20,
                 host="127.0.0.1", tls=False):
        self.port, self.host, self.tls = port, host, tls
        self.sources, self.per_source = sources, per_source
        self.seconds, self.trickle_s, self.reopen_per_s = seconds, trickle_s, reopen_per_s
        self.opened = self.closed_by_server = self.refused = 0
        self.held_max = 0
        self.socks = {}  # socket -> source
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        raise_fd_limit(len(sources) * per_source + 256)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(self.seconds + 10)
        for s in list(self.socks):
            s.close()
        self.socks.clear()

    def held(self):
        with self.lock:
            return len(self.socks)

    def _open(self, src):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.setblocking(False)
        try:
            s.connect((self.host, self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            self.refused += 1
            return None
        self.opened += 1
        # A TLS client would start a handshake; a slow one never finishes it:
        # the first bytes of a ClientHello record, then nothing more.
        first = b"\x16\x03\x01" if self.tls else b"GET / HTTP/1.1\r\nHost: x\r\n"
        try:
            s.send(first)
        except BlockingIOError:
            pass
        except OSError:
            pass
        return s

    def _run(self):
        end = time.monotonic() + self.seconds
        sel = selectors.DefaultSelector()
        want = {src: self.per_source for src in self.sources}
        # all of them at once first, then at most reopen_per_s a second each
        budget_t, budget = time.monotonic(), float(sum(want.values()))
        cap = max(budget, self.reopen_per_s * len(self.sources))
        next_trickle = time.monotonic() + self.trickle_s
        while not self.stop_ev.is_set() and time.monotonic() < end:
            now = time.monotonic()
            budget = min(cap, budget + (now - budget_t) * self.reopen_per_s * len(self.sources))
            budget_t = now
            # open up to the number wanted per source
            if budget >= 1:
                with self.lock:
                    have = {}
                    for src in self.socks.values():
                        have[src] = have.get(src, 0) + 1
                for src, n in want.items():
                    while have.get(src, 0) < n and budget >= 1:
                        budget -= 1
                        s = self._open(src)
                        have[src] = have.get(src, 0) + 1
                        if s is None:
                            continue
                        with self.lock:
                            self.socks[s] = src
                            self.held_max = max(self.held_max, len(self.socks))
                        sel.register(s, selectors.EVENT_READ)
            # a server that closes (or answers) ends the connection
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(sel, s, by_server=True)
            if now >= next_trickle:
                next_trickle = now + self.trickle_s
                with self.lock:
                    socks = list(self.socks)
                for s in socks:
                    try:
                        s.send(b"X" if not self.tls else b"\x00")
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        self._drop(sel, s, by_server=e.errno in (errno.EPIPE, errno.ECONNRESET))
        sel.close()

    def _drop(self, sel, s, by_server):
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        with self.lock:
            self.socks.pop(s, None)
        s.close()
        if by_server:
            self.closed_by_server += 1
