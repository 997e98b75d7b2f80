#!/usr/bin/env python3
"""care-edge and care-hub speak systemd's notification protocol (issue 12:
Type=notify, a watchdog fed from the main loops), read here from a fake
NOTIFY_SOCKET: an AF_UNIX datagram socket the test binds in its directory,
as systemd does, with WATCHDOG_USEC=2 s.

For each program, against a real Mosquitto and care-sim, everything on
127.0.0.1:
- READY=1 is the first message, with a STATUS= line, and when it arrives
  the console (care-edge) or the API (care-hub) port already accepts;
- WATCHDOG=1 keeps coming every half WATCHDOG_USEC (1 s): over 5 s, 4 to 7
  of them, never 2 s (WATCHDOG_USEC) apart, with a STATUS= line that says
  what the service is doing (devices online / gateways online);
- SIGHUP: RELOADING=1, then READY=1;
- the process stopped (SIGSTOP) for 3 s, longer than WATCHDOG_USEC: no
  WATCHDOG=1 meanwhile; after SIGCONT they come again at once;
- SIGTERM: STOPPING=1, no WATCHDOG=1 after it, exit status 0.

The keep-alives come from the main loop, not from a thread of their own:
care-edge with a second bus whose Modbus TCP slave takes requests and never
answers (timeout 3 s). The moment a request arrives, the test sends SIGHUP:
the reload, in the main loop, waits for that poll to time out. For those
seconds no WATCHDOG=1 comes (between RELOADING=1 and READY=1, more than
WATCHDOG_USEC apart), while the process is running: its console answers an
HTTP request meanwhile (a timer thread, or SIGSTOP's stop of everything,
would not give both).

And the edges of the protocol: WATCHDOG_USEC with WATCHDOG_PID naming
another process means the watchdog is not this one's (READY=1 but no
WATCHDOG=1); no WATCHDOG_USEC at all, the same.

The journal (common/log.c): with JOURNAL_STREAM naming fd 2's own device
and inode (stderr "is" the journal) and no journal socket, each line falls
back to stderr in the usual format; with JOURNAL_STREAM naming something
else, stderr keeps its format. When run as root, a third run gives care-edge
a journal socket of the test's (a private mount namespace with the test's
socket at /run/systemd/journal/socket) and reads the entries: MESSAGE,
PRIORITY 6 for info and 4 for a warning, CAREHUB_MODULE, CAREHUB_INSTANCE
(absent when the line has none) and SYSLOG_IDENTIFIER=care-edge, and
nothing on stderr.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, free_port, log, port_open, run_test, wait_for  # noqa: E402

WATCHDOG_USEC = 2_000_000
HASH = "$y$j9T$replace.with.a.real.hash$" + "0" * 43  # never matches: no login needed
STDERR_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [EWID] \[[a-z]+(:[^\]]+)?\] ", re.M)


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: every datagram as (monotonic time,
    {field: value}); on the first READY=1, whether `port` accepted then."""

    def __init__(self, w, name, port):
        self.path = w.path(f"{name}.notify")
        self.port = port
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.msgs = []
        self.lock = threading.Lock()
        self.ready_port_open = None
        self.done = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            if fields.get("READY") == "1" and self.ready_port_open is None:
                self.ready_port_open = port_open(self.port)
            with self.lock:
                self.msgs.append((t, fields))

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def times(self, field, since=0.0, until=float("inf")):
        return [t for t, f in self.snapshot() if f.get(field) == "1" and since <= t < until]

    def wait(self, field, since, timeout=15):
        return wait_for(f"{field}=1 on {self.path}",
                        lambda: (self.times(field, since) or [None])[0], timeout, 0.05)

    def close(self):
        self.done = True
        self.sock.close()


def notify_env(sock, **extra):
    env = dict(os.environ, NOTIFY_SOCKET=sock.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
    env.pop("WATCHDOG_PID", None)
    env.pop("JOURNAL_STREAM", None)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def start_sim(w):
    port = free_port()
    cfg = w.write("sim.yaml", f"""seed: 3
endpoints: [{{id: lan, tcp: "127.0.0.1:{port}"}}]
slaves: [{{name: th-101, endpoint: lan, unit: 1, model: jxct-th}}]
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", cfg])
    sim.wait_log("care-sim ready")
    return port


def edge_config(w, name, broker_uri, modbus, console):
    return w.write(f"{name}.yaml", f"""site: notify-home
gateway: gw-{name}
uplink: {{broker: "{broker_uri}", reconnect_max: 1s}}
spool: {{dir: "{w.path(name + '-spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses: [{{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus}, timeout: 1s}}]
devices: [{{id: th-101, bus: lan, slave: 1, profile: jxct-th, interval: 500ms, room: "101"}}]
console: {{enabled: true, bind: 127.0.0.1, port: {console}, users: [{{name: a, password_hash: "{HASH}"}}]}}
""")


def hub_config(w, name, broker, api):
    tokens = w.write("tokens.yaml", "tokens: []\n")
    return w.write(f"{name}.yaml", f"""mqtt: {{broker: "{broker.uri}", client_id: {name}}}
influx: {{url: "http://127.0.0.1:{free_port()}", database: carehub, shutdown_timeout: 1s}}
spool: {{dir: "{w.path(name + '-spool')}"}}
api: {{bind: 127.0.0.1, port: {api}, tokens_file: {tokens},
      audit_log: {w.path(name + '-audit.jsonl')}, pseudonym_key_file: {w.path(name + '.key')}}}
""")


def check_lifecycle(w, prog, cfg, port, status_word):
    """The whole protocol of one program, as the module docstring says."""
    sock = NotifySocket(w, prog, port)
    t_start = time.monotonic()
    p = w.spawn(prog, [w.bin(prog), "-c", cfg], env=notify_env(sock))
    t_ready = sock.wait("READY", t_start, 30)
    first = sock.snapshot()[0][1]
    assert first.get("READY") == "1", f"{prog}: the first message is {first}, not READY=1"
    assert first.get("STATUS"), f"{prog}: READY=1 without a STATUS= line: {first}"
    assert sock.ready_port_open, f"{prog}: READY=1 came before port {port} accepted"
    assert port_open(port)
    log(f"{prog}: READY=1 after {t_ready - t_start:.2f} s, port {port} accepting; "
        f"STATUS={first['STATUS']}")

    # the keep-alive: every WATCHDOG_USEC/2, never WATCHDOG_USEC apart
    time.sleep(5.2)
    beats = sock.times("WATCHDOG", t_ready, t_ready + 5.0)
    # about 5; the contract systemd holds it to is the gap, below
    assert 3 <= len(beats) <= 8, f"{prog}: {len(beats)} WATCHDOG=1 in 5 s (want about 5)"
    gaps = [b - a for a, b in zip([t_ready] + beats, beats)]
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"{prog}: keep-alives {max(gaps):.2f} s apart"
    statuses = [f["STATUS"] for _, f in sock.snapshot() if f.get("WATCHDOG") == "1" and "STATUS" in f]
    assert statuses and status_word in statuses[-1], f"{prog}: keep-alive status {statuses}"
    log(f"{prog}: {len(beats)} WATCHDOG=1 in 5 s, gaps {min(gaps):.2f}..{max(gaps):.2f} s; "
        f"STATUS={statuses[-1]}")

    # SIGHUP: RELOADING=1, then READY=1
    t_hup = time.monotonic()
    os.kill(p.pid, signal.SIGHUP)
    t_rel = sock.wait("RELOADING", t_hup)
    t_back = sock.wait("READY", t_rel)
    assert t_back >= t_rel
    log(f"{prog}: SIGHUP -> RELOADING=1 -> READY=1 in {t_back - t_hup:.2f} s")

    # not running, not fed; running again, fed again
    wait_for("a keep-alive after the reload", lambda: sock.times("WATCHDOG", t_back), 5, 0.05)
    t_stop = time.monotonic()
    os.kill(p.pid, signal.SIGSTOP)
    time.sleep(3.0)
    t_cont = time.monotonic()
    os.kill(p.pid, signal.SIGCONT)
    # a datagram sent just before SIGSTOP may still be read after it
    during = sock.times("WATCHDOG", t_stop + 0.2, t_cont)
    assert not during, f"{prog}: WATCHDOG=1 while stopped at {[round(t - t_stop, 2) for t in during]}"
    t_again = sock.wait("WATCHDOG", t_cont, 5)
    assert t_again - t_cont < WATCHDOG_USEC / 1e6, \
        f"{prog}: fed again only {t_again - t_cont:.2f} s after SIGCONT"
    log(f"{prog}: stopped 3 s: no WATCHDOG=1; SIGCONT: again after {t_again - t_cont:.2f} s")

    # SIGTERM: STOPPING=1, then no keep-alive
    t_term = time.monotonic()
    os.kill(p.pid, signal.SIGTERM)
    t_stopping = sock.wait("STOPPING", t_term)
    rc = p.p.wait(30)
    assert rc == 0, f"{prog}: exit {rc}\n{p.tail()}"
    time.sleep(0.3)
    late = sock.times("WATCHDOG", t_stopping)
    assert not late, f"{prog}: WATCHDOG=1 after STOPPING=1"
    log(f"{prog}: SIGTERM -> STOPPING=1 after {t_stopping - t_term:.2f} s, exit 0")
    sock.close()
    return p


class SilentSlave:
    """A Modbus TCP 'slave' that reads requests and never answers; `asked` is
    set when a request arrives."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.asked = threading.Event()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        while True:
            try:
                if not c.recv(4096):
                    return
            except OSError:
                return
            self.asked.set()

    def close(self):
        self.srv.close()
        for c in self.conns:
            c.close()


def console_answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def check_blocked_loop(w, broker_uri, modbus):
    """The main loop held up by a reload that waits for a poll: no keep-alive
    while the rest of care-edge runs."""
    slave = SilentSlave()
    console = free_port()
    cfg = w.write("blocked.yaml", f"""site: notify-home
gateway: gw-blocked
uplink: {{broker: "{broker_uri}", reconnect_max: 1s}}
spool: {{dir: "{w.path('blocked-spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus}, timeout: 1s}}
  - {{id: silent, type: modbus-tcp, host: 127.0.0.1, port: {slave.port}, timeout: 3s, backoff_max: 1s}}
devices:
  - {{id: th-101, bus: lan, slave: 1, profile: jxct-th, interval: 500ms, room: "101"}}
  - {{id: th-mute, bus: silent, slave: 1, profile: jxct-th, interval: 200ms, room: "102"}}
console: {{enabled: true, bind: 127.0.0.1, port: {console}, users: [{{name: a, password_hash: "{HASH}"}}]}}
""")
    sock = NotifySocket(w, "edge-blocked", console)
    t0 = time.monotonic()
    p = w.spawn("edge-blocked", [w.bin("care-edge"), "-c", cfg], env=notify_env(sock))
    try:
        t_ready = sock.wait("READY", t0, 30)
        wait_for("two keep-alives", lambda: len(sock.times("WATCHDOG", t_ready)) >= 2, 5, 0.05)
        slave.asked.clear()
        assert slave.asked.wait(10), "the silent slave was never asked"
        t_hup = time.monotonic()
        os.kill(p.pid, signal.SIGHUP)  # a poll has just begun: 3 s until its timeout
        t_rel = sock.wait("RELOADING", t_hup, 5)
        answered = []
        while not sock.times("READY", t_rel) and time.monotonic() < t_rel + 10:
            if console_answers(console):
                answered.append(time.monotonic())
            time.sleep(0.2)
        t_back = sock.wait("READY", t_rel, 1)
        fed = sock.times("WATCHDOG", t_rel, t_back)
        assert t_back - t_rel > WATCHDOG_USEC / 1e6, \
            f"the reload took {t_back - t_rel:.2f} s: it did not wait for the poll"
        assert not fed, f"WATCHDOG=1 during the reload at {[round(t - t_rel, 2) for t in fed]}"
        during = [t for t in answered if t_rel < t < t_back]
        assert during, "the console did not answer during the reload: was the process running?"
        t_again = sock.wait("WATCHDOG", t_back, 3)
        log(f"edge-blocked: reload held the main loop {t_back - t_rel:.2f} s (a poll's 3 s timeout): "
            f"no WATCHDOG=1 meanwhile, the console answered {len(during)} requests; fed again "
            f"{t_again - t_back:.2f} s after READY=1")
    finally:
        p.stop()
        slave.close()
        sock.close()
    assert p.p.returncode == 0, p.tail()


def check_not_watched(w, prog, cfg, port, name, **env):
    """READY=1 but no WATCHDOG=1 in 3 s: the watchdog is not this process's."""
    sock = NotifySocket(w, name, port)
    t0 = time.monotonic()
    p = w.spawn(name, [w.bin(prog), "-c", cfg], env=notify_env(sock, **env))
    t_ready = sock.wait("READY", t0, 30)
    time.sleep(3.0)
    beats = sock.times("WATCHDOG", t0)
    assert not beats, f"{name} ({env}): {len(beats)} WATCHDOG=1"
    p.stop()
    assert p.p.returncode == 0, p.tail()
    sock.close()
    log(f"{name}: READY=1 after {t_ready - t0:.2f} s and no WATCHDOG=1 ({env})")


def journal_stream_of(path):
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def check_journal_fallback(w, cfg, console):
    """JOURNAL_STREAM naming fd 2 itself, no journal socket here: stderr
    lines in their usual format, the same as with a JOURNAL_STREAM that is
    not fd 2."""
    assert not os.path.exists("/run/systemd/journal/socket"), "a journal runs here"
    for name, stream in [("edge-stream-self", None), ("edge-stream-other", "1:1")]:
        logpath = w.path(f"{name}.log")
        open(logpath, "w").close()
        env = dict(os.environ, JOURNAL_STREAM=stream or journal_stream_of(logpath))
        env.pop("NOTIFY_SOCKET", None)
        p = w.spawn(name, [w.bin("care-edge"), "-c", cfg], logpath=logpath, env=env)
        wait_for(f"{name} serving", lambda: port_open(console), 15)
        p.wait_log(r"\[console\] serving the alarm console")
        assert p.stop() == 0, p.tail()
        lines = [l for l in p.output().splitlines() if l.strip()]
        bad = [l for l in lines if not STDERR_LINE.match(l)]
        assert lines and not bad, f"{name}: lines not in the stderr format: {bad[:3]}"
        log(f"{name}: {len(lines)} stderr lines in the usual format")


def read_journal_entry(data):
    """The journal's native protocol: FIELD=value lines, or FIELD\\n, a
    little-endian 64-bit length and the value, for values with newlines."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode(errors="replace")
    return fields


def check_journal_fields(w, console, cfg):
    """care-edge with the test's socket as the journal's (a private mount
    namespace), stderr 'connected' to it: the entries' fields."""
    jdir = w.dir("journal")
    jsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    jsock.bind(os.path.join(jdir, "socket"))
    jsock.settimeout(0.2)
    entries, done = [], [False]

    def reader():
        while not done[0]:
            try:
                entries.append(read_journal_entry(jsock.recv(65536)))
            except socket.timeout:
                continue
            except OSError:
                return

    threading.Thread(target=reader, daemon=True).start()
    logpath = w.path("edge-journal.log")
    open(logpath, "w").close()
    env = dict(os.environ, JOURNAL_STREAM=journal_stream_of(logpath))
    env.pop("NOTIFY_SOCKET", None)
    # /run of its own, with the test's journal directory where the journal's is
    script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
              'mount --bind "$0" /run/systemd/journal && exec "$@"')
    p = w.spawn("edge-journal", ["unshare", "--mount", "--propagation", "private", "--",
                                 "sh", "-c", script, jdir, w.bin("care-edge"), "-c", cfg],
                logpath=logpath, env=env)
    try:
        wait_for("care-edge's console", lambda: port_open(console), 15)
        wait_for("a warning entry (the broker nobody listens on)",
                 lambda: any(e.get("PRIORITY") == "4" for e in entries), 15)
    finally:
        p.stop()
        done[0] = True
        jsock.close()
    assert p.p.returncode == 0, p.tail()
    mine = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "care-edge"]
    assert mine and len(mine) == len(entries), f"entries without SYSLOG_IDENTIFIER=care-edge: {entries[:3]}"
    for e in mine:
        assert e.get("MESSAGE") and e.get("CAREHUB_MODULE") and e.get("PRIORITY") in ("3", "4", "6", "7"), e
        assert not STDERR_LINE.match(e["MESSAGE"]), f"the stderr prefix in MESSAGE: {e}"
    started = [e for e in mine if e["MESSAGE"].startswith("started: site notify-home")]
    assert started and started[0]["PRIORITY"] == "6" and started[0]["CAREHUB_MODULE"] == "edge" \
        and started[0]["CAREHUB_INSTANCE"] == "gw-journal", started
    serving = [e for e in mine if e["MESSAGE"].startswith("serving the alarm console")]
    assert serving and serving[0]["CAREHUB_MODULE"] == "console" and "CAREHUB_INSTANCE" not in serving[0], serving
    warn = [e for e in mine if e["PRIORITY"] == "4"]
    assert warn, mine
    leaked = [l for l in open(logpath).read().splitlines() if STDERR_LINE.match(l)]
    assert not leaked, f"lines on stderr as well: {leaked[:3]}"
    log(f"journal: {len(mine)} entries, e.g. PRIORITY={warn[0]['PRIORITY']} "
        f"CAREHUB_MODULE={warn[0]['CAREHUB_MODULE']} "
        f"CAREHUB_INSTANCE={warn[0].get('CAREHUB_INSTANCE', '-')} MESSAGE={warn[0]['MESSAGE'][:60]!r}; "
        f"nothing on stderr")


def test_sd_notify(w):
    broker = Mosquitto(w, name="broker")
    modbus = start_sim(w)
    console, api = free_port(), free_port()
    edge_cfg = edge_config(w, "edge", broker.uri, modbus, console)
    hub_cfg = hub_config(w, "hub", broker, api)

    # both at once: the test's time is the slower one's
    results = {}

    def run(prog, cfg, port, word):
        try:
            check_lifecycle(w, prog, cfg, port, word)
            results[prog] = None
        except BaseException as e:  # reported by the main thread
            results[prog] = e

    threads = [threading.Thread(target=run, args=a) for a in
               [("care-edge", edge_cfg, console, "devices online"),
                ("care-hub", hub_cfg, api, "gateways online")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for prog in ("care-edge", "care-hub"):
        if results.get(prog, AssertionError(f"{prog}: no result")) is not None:
            raise results.get(prog, AssertionError(f"{prog}: no result"))

    check_blocked_loop(w, broker.uri, modbus)
    check_not_watched(w, "care-hub", hub_cfg, api, "hub-other-pid", WATCHDOG_PID="1")
    check_not_watched(w, "care-edge", edge_cfg, console, "edge-no-usec", WATCHDOG_USEC=None)

    check_journal_fallback(w, edge_cfg, console)
    if os.geteuid() == 0 and shutil.which("unshare"):
        # a broker nobody listens on: the uplink's warnings
        jcfg = edge_config(w, "journal", f"tcp://127.0.0.1:{free_port()}", modbus, console)
        check_journal_fields(w, console, jcfg)
    else:
        log("journal fields: skipped (needs root for a private mount namespace)")


if __name__ == "__main__":
    run_test(test_sd_notify)
