"""A hostile Modbus TCP peer (issue 11): care-edge refuses replies whose MBAP
header or PDU does not answer its request, and keeps reading the healthy
meter on the same connection.

The peer is a raw-socket Modbus TCP server in this file (127.0.0.1, free
port), not care-sim: it must be able to send what no correct server sends.
Unit 1 (th-good) always answers correctly. Unit 2 (th-bad) answers each
request with the next fault of FAULTS: a wrong unit id (the healthy meter's),
protocol id 7, MBAP length 0 and 0xFFFF, a length longer than the PDU (with
padding), shorter than the PDU (the rest following 50 ms later, so only a
new connection keeps it out of the next reply), longer than what is ever
sent, and a wrong transaction id; every faulty reply carries values of its
own (99.9 %RH, -40.0 °C). Then it answers correctly with other values.

Asserts:
- each fault is logged by care-edge naming the device, the register range
  and the field, expected vs got; th-good is never logged as rejected;
- each bad frame costs one failed poll of th-bad (stats file, and the
  edge_device self-metric published to the broker), and care-edge reconnects
  after each one (the peer counts connections);
- no reading carries the faulty values; th-bad's readings after the faults
  carry the good ones (the path back), and it counts as many ok polls as it
  published readings;
- th-good on the same connection never fails a poll and keeps its schedule.
"""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402

INTERVAL_MS = 200
GOOD = (450, 215)  # th-good: 45.0 %RH, 21.5 °C
BAD = (999, 0x10000 - 400)  # in every faulty reply: 99.9 %RH, -40.0 °C
RECOVERED = (555, 222)  # th-bad once it answers correctly: 55.5 %RH, 22.2 °C
RANGE = "read fc3 0+2 from unit 2 on lan"

# (name, what care-edge must log after "rejected reply to <RANGE>: ")
FAULTS = [
    ("unit", "unit id 1, expected 2"),
    ("protocol", "MBAP protocol id 7, expected 0"),
    ("length-0", "MBAP length 0, expected 3..254"),
    ("length-ffff", "MBAP length 65535, expected 3..254"),
    ("length-long", "MBAP length 9, expected 7"),
    ("length-short", "MBAP length 5, expected 7"),
    ("length-beyond", "frame size 13, expected 15"),
    ("tid", "MBAP transaction id "),
]


def mbap(tid, unit, pdu, proto=0, length=None):
    return struct.pack(">HHHB", tid, proto, len(pdu) + 1 if length is None else length,
                       unit) + pdu


def read_pdu(values):
    return struct.pack(">BB", 3, 2 * len(values)) + b"".join(struct.pack(">H", v) for v in values)


class HostilePeer:
    """Modbus TCP server answering fc3 reads of units 1 and 2 (see module
    docstring). Records what it sent; one thread per connection."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.sent = []  # (unit, fault name or "good")
        self.connections = 0
        self.faults = [name for name, _ in FAULTS]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        with c:
            while True:
                try:
                    data = c.recv(512)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 6:
                    n = 6 + struct.unpack(">H", buf[4:6])[0]
                    if len(buf) < n:
                        break
                    req, buf = buf[:n], buf[n:]
                    try:
                        self.answer(c, req)
                    except OSError:
                        return  # care-edge hung up on a bad frame: expected

    def answer(self, c, req):
        tid, proto, _, unit = struct.unpack(">HHHB", req[:7])
        fc, start, count = struct.unpack(">BHH", req[7:12])
        assert proto == 0 and fc == 3 and start == 0 and count == 2, req.hex()
        with self.lock:
            fault = self.faults.pop(0) if unit == 2 and self.faults else "good"
            self.sent.append((unit, fault))
        if fault == "good":
            c.sendall(mbap(tid, unit, read_pdu(GOOD if unit == 1 else RECOVERED)))
            return
        pdu = read_pdu(BAD)
        if fault == "unit":
            c.sendall(mbap(tid, 1, pdu))
        elif fault == "protocol":
            c.sendall(mbap(tid, unit, pdu, proto=7))
        elif fault == "length-0":
            c.sendall(mbap(tid, unit, pdu, length=0))
        elif fault == "length-ffff":
            c.sendall(mbap(tid, unit, pdu, length=0xFFFF))
        elif fault == "length-long":
            c.sendall(mbap(tid, unit, pdu, length=len(pdu) + 3) + b"\x00\x00")
        elif fault == "length-short":
            frame = mbap(tid, unit, pdu, length=len(pdu) - 1)
            c.sendall(frame[:-2])
            time.sleep(0.05)
            c.sendall(frame[-2:])
        elif fault == "length-beyond":
            c.sendall(mbap(tid, unit, pdu, length=len(pdu) + 3))
        elif fault == "tid":
            c.sendall(mbap(tid ^ 0x5A5A, unit, pdu))

    def snapshot(self):
        with self.lock:
            return list(self.sent), self.connections

    def close(self):
        self.sock.close()


def readings(path):
    """Every reading care-edge published, as (device, measurement, metrics)."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            topic, _, payload = line.rstrip("\n").partition("\t")
            if not topic.endswith("/telemetry"):
                continue
            for r in json.loads(payload)["readings"]:
                out.append((r["device"], r["measurement"], r["metrics"]))
    return out


def test_modbus_tcp_hostile(w):
    mqtt = Mosquitto(w)
    peer = HostilePeer()
    capture = mqtt.subscribe("carehub/v1/#", "capture")
    site = w.write("site.yaml", f"""
site: hostile-site
gateway: gw-h
uplink: {{broker: "{mqtt.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {peer.port}, timeout: 500ms,
     backoff_max: 1s}}
devices:
  - {{id: th-good, bus: lan, slave: 1, profile: jxct-th, interval: {INTERVAL_MS}ms}}
  - {{id: th-bad, bus: lan, slave: 2, profile: jxct-th, interval: {INTERVAL_MS}ms}}
self_metrics_interval: 1s
""")
    stats_path = w.path("edge-stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site, "--stats-file", stats_path])
    edge.wait_log(r"connected to", 10)
    t0 = time.monotonic()

    def recovered():
        sent, _ = peer.snapshot()
        return sum(1 for u, f in sent if u == 2 and f == "good") >= 3
    wait_for("the peer to send every fault, then three good replies to unit 2", recovered, 30)
    wait_for("a reading of th-bad with the good values",
             lambda: any(d == "th-bad" for d, _, _ in readings(capture.logpath)), 10)
    # one more self-metrics round, so the published counters include every fault
    time.sleep(1.5)
    assert edge.alive(), edge.tail()
    run_s = time.monotonic() - t0
    rc = edge.stop()
    assert rc == 0, f"care-edge exit {rc}\n{edge.tail()}"
    peer.close()
    time.sleep(0.5)
    capture.stop()
    sent, connections = peer.snapshot()
    out = edge.output()
    with open(stats_path) as f:
        stats = json.load(f)["devices"]
    log(f"peer: {len(sent)} replies over {connections} connections; edge: {stats}")

    # the peer sent each fault once, in order
    assert [f for u, f in sent if u == 2][:len(FAULTS)] == [n for n, _ in FAULTS], sent

    # each fault was logged with device, register range, field, expected vs got
    for name, what in FAULTS:
        line = f"[modbus:th-bad] rejected reply to {RANGE}: {what}"
        assert line in out, f"fault {name}: no log line {line!r}\n{edge.tail(60)}"
    assert out.count("[modbus:th-bad] rejected reply") == len(FAULTS), edge.tail(60)
    assert "[modbus:th-good] rejected" not in out, edge.tail(60)
    log(f"all {len(FAULTS)} faults logged")

    # each bad frame: one failed poll, then a new connection
    assert stats["th-bad"]["polls_failed"] == len(FAULTS), stats
    assert connections >= 1 + len(FAULTS), f"{connections} connections for {len(FAULTS)} faults"

    # nothing faulty was stored; the healthy meter and the way back are intact
    got = readings(capture.logpath)
    env = [(d, m) for d, meas, m in got if meas == "environment"]
    want = {"th-good": {"humidity": 45.0, "temperature": 21.5},
            "th-bad": {"humidity": 55.5, "temperature": 22.2}}
    for d, m in env:
        assert {k: round(v, 1) for k, v in m.items()} == want[d], f"{d} published {m}"
    n_env = {d: sum(1 for e, _ in env if e == d) for d in want}
    assert n_env["th-bad"] >= 1 and n_env["th-bad"] == stats["th-bad"]["polls_ok"], (n_env, stats)
    assert stats["th-good"]["polls_failed"] == 0, stats
    expected = int(run_s * 1000 / INTERVAL_MS)
    assert n_env["th-good"] >= expected * 0.8, f"th-good: {n_env['th-good']} readings in " \
        f"{run_s:.1f} s, schedule gives ~{expected}"
    log(f"readings: {n_env} (th-good's schedule ~{expected}), none with the faulty values")

    # counted in the self-metrics like any failed poll
    failed = [m.get("polls_failed") for d, meas, m in got if meas == "edge_device" and d == "th-bad"]
    assert failed and failed[-1] == len(FAULTS), f"edge_device polls_failed of th-bad: {failed}"
    good_failed = [m.get("polls_failed") for d, meas, m in got
                   if meas == "edge_device" and d == "th-good"]
    assert good_failed and max(good_failed) == 0, good_failed


if __name__ == "__main__":
    run_test(test_modbus_tcp_hostile)
    print("modbus_tcp_hostile: 1 passed, 0 failed")
