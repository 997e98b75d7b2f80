"""Test harness: real Mosquitto, InfluxDB, socat and carehub programs, each
started on a free loopback port in a temporary directory and stopped by PID.

Everything binds to 127.0.0.1. Every wait is bounded. A test builds a World,
starts what it needs, and the World stops all of it on exit (also on a
failed assertion or a signal).
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

BIN = os.environ.get("CAREHUB_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
SRC = os.environ.get("CAREHUB_SRC", os.path.join(os.path.dirname(__file__), "../.."))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, pred, timeout, interval=0.1):
    """Polls pred() until it returns a truthy value; fails after timeout s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the thing may not be up yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, argv, logpath, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                  start_new_session=True)
        self.pid = self.p.pid

    def output(self):
        with open(self.logpath, "r", errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, timeout=10):
        rx = re.compile(pattern)
        def check():
            if self.p.poll() is not None and not rx.search(self.output()):
                raise AssertionError(f"{self.name} exited ({self.p.returncode}) before "
                                     f"logging /{pattern}/:\n{self.tail()}")
            return rx.search(self.output())
        return wait_for(f"{self.name} to log /{pattern}/", check, timeout)

    def tail(self, n=40):
        return "\n".join(self.output().splitlines()[-n:])

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals the process and waits; returns its exit status."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(5)
        self.logf.close()
        return self.p.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)


class Influx:
    def __init__(self, world):
        self.world = world
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        d = world.dir("influx")
        cfg = os.path.join(d, "influxdb.conf")
        with open(os.path.join(SRC, "deploy/influxdb/loopback.conf.in")) as f:
            text = f.read()
        for k, v in (("@DIR@", d), ("@HTTP_PORT@", str(self.port)), ("@RPC_PORT@", str(free_port()))):
            text = text.replace(k, v)
        with open(cfg, "w") as f:
            f.write(text)
        self.proc = world.spawn("influxd", ["influxd", "-config", cfg])
        wait_for("InfluxDB /ping", lambda: self.ping(), 30)

    def ping(self):
        with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
            return r.status == 204

    def query(self, q, db=None):
        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=10) as r:
            return json.loads(r.read())

    def write(self, lines, db):
        """Writes line protocol (precision ms) straight to InfluxDB."""
        url = f"{self.url}/write?db={urllib.parse.quote(db)}&precision=ms"
        with urllib.request.urlopen(url, data=lines.encode(), timeout=10) as r:
            assert r.status == 204, r.status

    def series(self, q, db):
        """Rows of a query as a list of dicts, with tags merged in."""
        out = []
        for res in self.query(q, db).get("results", []):
            if "error" in res:
                raise AssertionError(f"InfluxDB error for {q}: {res['error']}")
            for s in res.get("series", []):
                for v in s["values"]:
                    row = dict(zip(s["columns"], v))
                    row.update(s.get("tags", {}))
                    row["_measurement"] = s["name"]
                    out.append(row)
        return out


def seq_coverage(influx, db, gateway):
    """The readings' sequence numbers a gateway has in InfluxDB, over every
    measurement: (count, distinct, min, max)."""
    count = distinct = 0
    lo, hi = None, None
    for row in influx.series(f'SELECT count("seq"), count(distinct("seq")) AS d, min("seq"), '
                             f'max("seq") FROM /.*/ WHERE "gateway" = \'{gateway}\'', db):
        if row.get("count") is None:
            continue
        count += row["count"]
        distinct += row["d"]
        lo = row["min"] if lo is None else min(lo, row["min"])
        hi = row["max"] if hi is None else max(hi, row["max"])
    return count, distinct, lo, hi


def ranges(ids):
    """[1, 2, 3, 7] -> "1..3, 7..7": numbers (any order, repeats ignored) as runs."""
    s = sorted(set(ids))
    out, start = [], None
    for i, v in enumerate(s):
        if start is None:
            start = v
        if i + 1 == len(s) or s[i + 1] != v + 1:
            out.append(f"{start}..{v}")
            start = None
    return ", ".join(out)


class Mosquitto:
    """A broker on 127.0.0.1. tls=(ca, cert, key) makes the listener TLS-only;
    persistent=True keeps sessions and queued QoS 1 messages across restarts
    (as a production broker should)."""

    def __init__(self, world, port=None, tls=None, persistent=False, name="mosquitto",
                 start=True):
        self.world = world
        self.name = name
        self.port = port or free_port()
        self.tls = tls
        d = world.dir(name)
        self.cfg = os.path.join(d, "mosquitto.conf")
        extra = ""
        if tls:
            extra += f"cafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n"
        if persistent:
            extra += f"persistence true\npersistence_location {d}/\nautosave_interval 1\n"
        else:
            extra += "persistence false\n"
        with open(self.cfg, "w") as f:
            f.write(f"""per_listener_settings false
listener {self.port} 127.0.0.1
{extra}allow_anonymous true
max_queued_messages 1000000
# as deploy/mosquitto/carehub.conf: a payload over care-hub's limit (1 MiB;
# here 1 KiB more, so that hub_smoke still sees the hub's own check) never
# reaches it (PUBACKed and dropped), a packet far over it is refused before
# the broker reads it (the client is disconnected)
message_size_limit 1049600
max_packet_size 2097152
log_dest stderr
log_type error
log_type warning
user root
""")
        self.proc = None
        if start:
            self.start()

    def start(self):
        self.proc = self.world.spawn(self.name, ["mosquitto", "-c", self.cfg])
        wait_for("mosquitto to listen", lambda: port_open(self.port), 10)

    def stop(self):
        self.proc.stop()

    @property
    def uri(self):
        return f"{'ssl' if self.tls else 'tcp'}://127.0.0.1:{self.port}"

    def client_args(self):
        return ["-h", "127.0.0.1", "-p", str(self.port)] + (["--cafile", self.tls[0]] if self.tls else [])

    def publish(self, topic, payload, retain=False):
        argv = ["mosquitto_pub"] + self.client_args() + ["-q", "1", "-t", topic, "-m", payload]
        if retain:
            argv.append("-r")
        subprocess.run(argv, check=True, timeout=10)

    def subscribe(self, topic, name="sub"):
        """Captures every message on topic as JSON lines {topic, payload}."""
        path = os.path.join(self.world.root, f"{name}.capture")
        return self.world.spawn(name, ["mosquitto_sub"] + self.client_args() +
                                ["-q", "1", "-v", "-t", topic, "-F", "%t\t%p"], logpath=path)


class Console:
    """A client of care-edge's local alarm console: a logged-in session
    (cookie) and a Server-Sent Events reader collecting events in a list."""

    def __init__(self, port, user, password):
        import http.cookiejar
        import urllib.request
        self.base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.events = []
        self.lock = threading.Lock()
        self.status, _ = self.request("POST", "/api/login", {"user": user, "password": password})

    def request(self, method, path, body=None):
        """(status, parsed JSON or None); never raises for HTTP errors."""
        import urllib.error
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def listen(self):
        """Starts reading /api/events in a thread; events land in self.events
        as (monotonic time, event name, parsed data)."""
        import http.client
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        conn = http.client.HTTPConnection("127.0.0.1", int(self.base.rsplit(":", 1)[1]), timeout=30)
        conn.request("GET", "/api/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
        resp = conn.getresponse()
        assert resp.status == 200, f"event stream: HTTP {resp.status}"
        self.stream = conn

        def reader():
            name, data = "message", []
            try:
                while True:
                    line = resp.readline()
                    if not line:
                        return
                    line = line.decode().rstrip("\r\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "":
                        if data:
                            try:
                                doc = json.loads("\n".join(data))
                            except ValueError:
                                doc = "\n".join(data)
                            with self.lock:
                                self.events.append((time.monotonic(), name, doc))
                        name, data = "message", []
            except Exception:
                return

        threading.Thread(target=reader, daemon=True).start()

    def find(self, pred):
        with self.lock:
            for ev in self.events:
                if pred(ev[1], ev[2]):
                    return ev
        return None

    def close(self):
        try:
            self.stream.close()
        except Exception:
            pass


class World:
    """A temporary directory and everything started in it."""

    def __init__(self, name):
        self.root = tempfile.mkdtemp(prefix=f"carehub-{name}-")
        self.procs = []
        self.keep = os.environ.get("CAREHUB_KEEP_TMP") == "1"
        atexit.register(self.close)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
        log(f"test dir {self.root}")

    def dir(self, name):
        d = os.path.join(self.root, name)
        os.makedirs(d, exist_ok=True)
        return d

    def path(self, name):
        return os.path.join(self.root, name)

    def spawn(self, name, argv, logpath=None, env=None):
        p = Proc(name, argv, logpath or os.path.join(self.root, f"{name}.log"), env=env)
        self.procs.append(p)
        return p

    def bin(self, prog):
        return os.path.join(BIN, prog)

    def socat_pair(self, name):
        """Two linked pseudo-terminals; returns (end_a, end_b) paths."""
        a, b = self.path(f"{name}-A"), self.path(f"{name}-B")
        self.spawn(f"socat-{name}", ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}",
                                     f"pty,raw,echo=0,link={b}"])
        wait_for(f"socat {name} PTYs", lambda: os.path.exists(a) and os.path.exists(b), 10)
        return a, b

    def make_ca(self, name="ca", host_ip="127.0.0.1"):
        """A CA and a server certificate for host_ip (openssl); returns
        (ca.pem, server.pem, server.key)."""
        d = self.dir(f"pki-{name}")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30, cwd=d)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", f"/CN=carehub test {name} CA")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", f"/CN={host_ip}")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write(f"subjectAltName=IP:{host_ip}\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
        return tuple(os.path.join(d, f) for f in ("ca.pem", "server.pem", "server.key"))

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def close(self):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=10)
            except Exception:
                pass
        self.procs = []
        if not self.keep and os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def dump_logs(self):
        for p in self.procs:
            print(f"---- {p.name} ({p.logpath}) ----\n{p.tail(60)}", flush=True)


def new_tokens(w, specs):
    """API tokens made by `care-hub --new-token`: specs maps each name to the
    YAML of its role and scope ("role: staff\n    sites: [cq-yz-001]").
    Returns ({name: secret}, the tokens file's path, the file's entries)."""
    import subprocess
    secrets, entries = {}, []
    for name, spec in specs.items():
        r = subprocess.run([w.bin("care-hub"), "--new-token", name], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, f"care-hub --new-token {name}: {r.stderr}"
        secrets[name] = [l.strip() for l in r.stdout.splitlines() if l.strip().startswith("chk_")][0]
        sha = [l.split(":", 1)[1].strip() for l in r.stdout.splitlines() if "sha256:" in l][0]
        entries.append(f"  - name: {name}\n    sha256: {sha}\n    {spec}\n")
    return secrets, w.write("tokens.yaml", "tokens:\n" + "".join(entries)), entries


def hub_yaml(mqtt, influx, db, client_id, spool="hub-spool", extra=""):
    """A care-hub configuration for a test: the broker (client_id), InfluxDB
    database db written every 100 ms and retried within 1 s, a spool
    directory, then extra (api:, notify:, ... sections as YAML)."""
    return f"""mqtt:
  broker: {mqtt.uri}
  client_id: {client_id}
influx:
  url: {influx.url}
  database: {db}
  flush_interval: 100ms
  max_backoff: 1s
spool:
  dir: {spool}
{extra}"""


def run_test(fn):
    """Runs a test function with a World; prints logs on failure."""
    w = World(fn.__name__)
    try:
        fn(w)
    except BaseException:
        w.dump_logs()
        raise
    finally:
        w.close()
    log(f"PASS {fn.__name__}")
