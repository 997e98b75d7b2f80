"""From an SOS pulled to the people who must hear it: the time to a phone's
webhook (the notifier, common/notify.c) and to the sounder relay at the
nurses' station (an annunciator coil), with the WAN up and with it down.
Prints p50/p99; never passes or fails on a number.

N nurse-call panels and a 4-channel relay on care-sim (Modbus TCP), polled
every 100 ms; panel i's SOS is pulled for 1 s at 3 s + i x 2 s (a high
alarm; back to rtn_unack when released, so the sounder, on for unacknowledged
alarms, goes off in between). The start of each measurement is when
care-sim pulled the cord (its log); the ends are the webhook receiver's
arrival time (a loopback HTTP server standing in for a WeCom robot or an SMS
gateway) and care-sim's log of the coil going on. WAN down: the central
broker's port has nothing listening, so the uplink keeps retrying.

  python3 tests/bench/bench_notify.py [--panels 20]
"""
import argparse
import datetime
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import SRC, Mosquitto, World, free_port, log  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def log_time(line):
    """The wall-clock time of a carehub log line (ISO 8601, ms, UTC)."""
    stamp = line.split(" ", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class Hook:
    """A webhook receiver on loopback: arrival time of each request body."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                t = time.time()
                with outer.lock:
                    outer.got.append((t, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def run(n, wan_up):
    w = World("bench-notify-" + ("up" if wan_up else "down"))
    hook = Hook()
    try:
        if wan_up:
            broker = Mosquitto(w, name="central").uri
        else:
            broker = f"tcp://127.0.0.1:{free_port()}"  # nothing listens: the WAN is down
        port = free_port()
        scen = "\n".join(
            f"  - {{at: {3 + 2 * i}s, slave: panel-{i + 1}, set: {{metric: sos, pulse: 1, for: 1s}}}}"
            for i in range(n))
        sim_cfg = w.write("sim.yaml", f"""
seed: 5
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: panel, endpoint: lan, unit: 1, model: call-panel, count: {n}}}
  - {{name: relay-90, endpoint: lan, unit: 90, model: relay-4ch}}
scenario:
{scen}
""")
        devs = "\n".join(f"  - {{id: panel-{i + 1}, bus: lan, slave: {i + 1}, profile: call-panel, "
                         f"interval: 100ms, room: r{i + 1}}}" for i in range(n))
        site = w.write("site.yaml", f"""
site: bench-site
gateway: gw-n
uplink: {{broker: "{broker}", batch_interval: 100ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
devices:
{devs}
rules:
  - {{id: sos, kind: sos, when: sos == 1, priority: high, select: {{kind: [call]}}}}
alarms: {{flood_count: 100000}}
annunciators:
  - {{id: station, bus: lan, slave: 90, coil: 0, priorities: [high]}}
notify:
  channels:
    - {{id: phone, type: webhook, url: "{hook.url}"}}
  routes:
    - {{priorities: [high], levels: [[phone]]}}
""")
        edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
        edge.wait_log(r"started: site", 10)
        sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
        sim.wait_log("care-sim ready", 10)
        deadline = time.time() + 3 + 2 * n + 10
        while time.time() < deadline:
            with hook.lock:
                if len(hook.got) >= n:
                    break
            time.sleep(0.2)
        time.sleep(1)
        edge.stop()
        out = sim.output().splitlines()
        sim.stop()

        pulled = {}
        for line in out:
            m = re.search(r"\[sim:(panel-\d+)\] scenario [\d.]+s: sos pulsed to 1", line)
            if m:
                pulled[m.group(1)] = log_time(line)
        coil_on = sorted(log_time(l) for l in out if re.search(r"relay-90: coil 0 -> on", l))
        hook_at = {}
        with hook.lock:
            for t, body in hook.got:
                try:
                    doc = json.loads(body)
                except ValueError:
                    continue
                dev = (doc.get("alarm_id") or "").split(":", 1)[-1]
                hook_at.setdefault(dev, t)
        to_hook = [hook_at[d] - t0 for d, t0 in pulled.items() if d in hook_at]
        to_relay = []
        for t0 in sorted(pulled.values()):
            after = [t for t in coil_on if t >= t0]
            if after and after[0] - t0 < 2:
                to_relay.append(after[0] - t0)
        return to_hook, to_relay, len(pulled)
    finally:
        hook.close()
        w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--panels", type=int, default=20)
    args = ap.parse_args()
    for wan_up in (True, False):
        to_hook, to_relay, pulled = run(args.panels, wan_up)
        label = "WAN up" if wan_up else "WAN down"
        ms = lambda xs, p: f"{pct(xs, p) * 1000:.0f} ms" if xs else "-"  # noqa: E731
        log(f"{label}: {pulled} SOS pulled; webhook {len(to_hook)}/{pulled}: p50 "
            f"{ms(to_hook, 50)}, p99 {ms(to_hook, 99)}; sounder relay {len(to_relay)}/{pulled}: "
            f"p50 {ms(to_relay, 50)}, p99 {ms(to_relay, 99)}")


if __name__ == "__main__":
    main()
