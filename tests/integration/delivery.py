"""Delivered means stored (issue 10, tests 3 and 4): a broker's PUBACK frees
nothing on the gateway; only the hub's acknowledgement that it stored a
reading or an alert does.

3a. Under load the broker is SIGKILLed with persistence off (its sessions,
    the hub's with it, are gone), care-edge is SIGKILLed during the outage and
    started again, and the broker comes back empty: care-edge reconnects first
    and the broker drops what it sends until care-hub has resubscribed.
    InfluxDB ends with every reading number and every alert number care-edge
    produced, each once.
3b. A brand-new broker, and a hub that connects 30 s after the gateway: the
    same.
4.  The spool's bound is reached while no hub is there (a new broker keeps
    nothing for a hub it never saw): the hub, started later, reports as lost
    exactly the numbers the edge logged as evicted and that no one stored,
    from the gateway's first number on (numbers before the first one the hub
    ever received included), readings and alerts alike; the edge's eviction
    counts say how many of them it had sent.
5.  Two hubs on a shared subscription each acknowledge what they stored:
    the gateway's spool ends empty, every number stored once.

Real Mosquitto, InfluxDB, care-sim, care-edge and care-hub; every wait bounded.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Influx, Mosquitto, free_port, log, ranges, run_test,  # noqa: E402
                     seq_coverage, wait_for)

DB = "carehub"
N_DEV = 10
SITE = "dl-site"


class Setup:
    def __init__(self, w, gateway, interval="100ms", max_bytes=None, hub_now=True,
                 broker_port=None, extra_rules=""):
        self.w, self.gateway = w, gateway
        self.influx = Influx(w)
        self.mqtt = Mosquitto(w, port=broker_port, persistent=False)
        port = free_port()
        sim_cfg = w.write("sim.yaml", f"""
seed: 7
endpoints: [{{id: lan, tcp: "127.0.0.1:{port}"}}]
slaves: [{{name: air, endpoint: lan, unit: 1, model: air-board, count: {N_DEV}}}]
""")
        self.sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
        self.sim.wait_log("care-sim ready", 10)
        self.hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{self.mqtt.uri}", client_id: hub-dl}}
influx: {{url: "{self.influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: "{w.path('hub-spool')}"}}
self_metrics_interval: 1s
ack_interval: 300ms
""")
        self.hub = None
        if hub_now:
            self.start_hub()
        devs = "\n".join(f"  - {{id: air-{i + 1:02d}, bus: lan, slave: {i + 1}, "
                         f"profile: air-board, interval: {interval}}}" for i in range(N_DEV))
        bound = f", max_bytes: {max_bytes}" if max_bytes else ""
        # alerts at start, and 4 s later (inside an outage that starts then)
        self.site = w.write("site.yaml", f"""
site: {SITE}
gateway: {gateway}
uplink: {{broker: "{self.mqtt.uri}", batch_interval: 200ms, batch_max: 100,
          hub_ack_timeout: 2s, reconnect_max: 2s}}
spool: {{dir: "{w.path('spool')}", replay_rate: 2000{bound}}}
profiles: [{SRC}/deploy/profiles]
buses: [{{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}}}]
devices:
{devs}
self_metrics_interval: 1s
rules:
  - {{id: warm, when: temperature > 23.2, priority: low, select: {{profile: [air-board]}}}}
  - {{id: co2-seen, when: co2 > 0, for: 4s, priority: low, select: {{profile: [air-board]}}}}
{extra_rules}""")
        self.stats = w.path("stats.json")
        self.edge = None

    def start_hub(self, name="care-hub"):
        self.hub = self.w.spawn(name, [self.w.bin("care-hub"), "-c", self.hub_cfg])
        self.hub.wait_log("subscribed", 40)

    def start_edge(self, name="care-edge"):
        self.edge = self.w.spawn(name, [self.w.bin("care-edge"), "-c", self.site,
                                         "--stats-file", self.stats])
        return self.edge

    def stop_edge(self):
        assert self.edge.stop() == 0, self.edge.tail()
        with open(self.stats) as f:
            return json.load(f)

    def readings(self):
        return seq_coverage(self.influx, DB, self.gateway)

    def alert_numbers(self):
        rows = self.influx.series(f'SELECT "alert_seq" FROM "alarm" WHERE "gateway" = '
                                  f'\'{self.gateway}\'', DB)
        return [int(r["alert_seq"]) for r in rows if r.get("alert_seq") is not None]

    def stored_numbers(self):
        rows = self.influx.series(f'SELECT "seq" FROM /^(environment|edge_.*)$/ WHERE '
                                  f'"gateway" = \'{self.gateway}\'', DB)
        return {int(r["seq"]) for r in rows}

    def complete(self, beyond=0, timeout=40):
        """Waits until InfluxDB holds readings 1..N (N > beyond) and alerts
        1..M, each once, for N and M still growing; returns (N, M)."""
        def done():
            c, d, lo, hi = self.readings()
            alerts = self.alert_numbers()
            ok = (c and c == d == hi and lo == 1 and hi > beyond and alerts and
                  sorted(alerts) == list(range(1, max(alerts) + 1)))
            return (hi, max(alerts)) if ok else None
        try:
            return wait_for("every reading and alert number stored once", done, timeout, 0.5)
        except AssertionError:
            raise AssertionError(f"readings {self.readings()}: {self.explain()}, alerts "
                                 f"{summary(self.alert_numbers())}")

    def explain(self):
        """Which reading numbers are missing or doubled, per measurement."""
        rows = self.influx.series(f'SELECT "seq" FROM /.*/ WHERE "gateway" = '
                                  f'\'{self.gateway}\'', DB)
        seen = {}
        for r in rows:
            if r.get("seq") is not None and r["_measurement"] != "alarm":
                seen.setdefault(int(r["seq"]), []).append(r["_measurement"])
        if not seen:
            return "none"
        missing = sorted(set(range(1, max(seen) + 1)) - set(seen))
        doubled = {k: v for k, v in seen.items() if len(v) > 1}
        return (f"missing {summary(missing) if missing else 'none'}; doubled "
                f"{len(doubled)}: {list(doubled.items())[:5]}")

    def settle(self, st, timeout=30):
        """After care-edge stopped: InfluxDB holds exactly its readings
        1..last_seq and alerts 1..last_alert_seq, each once."""
        last, alast = st["last_seq"], st["last_alert_seq"]
        want = (last, last, 1, last)

        def done():
            a = self.alert_numbers()
            return self.readings() == want and sorted(a) == list(range(1, alast + 1))
        try:
            wait_for("InfluxDB to hold every reading and alert once", done, timeout, 0.5)
        except AssertionError:
            raise AssertionError(f"readings {self.readings()} want {want}; alerts "
                                 f"{summary(self.alert_numbers())} want 1..{alast}")


def summary(nums):
    """[1, 2, 3, 3, 7] -> '1..3, 7..7 (5 points, 4 distinct)'."""
    return f"{ranges(nums)} ({len(nums)} points, {len(set(nums))} distinct)"


def test_broker_killed_empty(w):
    s = Setup(w, "gw-kill")
    edge = s.start_edge("care-edge-1")
    edge.wait_log("a hub acknowledges storage", 15)
    time.sleep(3)
    before = s.readings()[3]
    s.mqtt.proc.kill()  # SIGKILL, persistence off: every session is gone
    edge.wait_log("connection lost", 10)
    time.sleep(2)
    edge.kill()  # SIGKILL during the outage
    log("broker and care-edge killed")
    edge = s.start_edge("care-edge-2")
    edge.wait_log("spool", 10)
    time.sleep(2)
    s.mqtt.start()  # empty: it has never heard of care-hub
    edge.wait_log("connected to", 15)
    # the outage's readings, and the live ones after it
    n, m = s.complete(beyond=before + 500)
    log(f"after the empty broker: readings 1..{n} and alerts 1..{m} stored")
    st = s.stop_edge()
    s.settle(st)
    assert st["redeliveries"] >= 1, st
    assert re.search(r"taken by the broker \d+s ago", edge.output()), edge.tail()
    log(f"broker SIGKILLed empty, care-edge SIGKILLed in the outage: readings 1..{st['last_seq']} "
        f"and alerts 1..{st['last_alert_seq']} stored once each; "
        f"{st['redeliveries']} redelivery round(s), {st['hub_acks']} hub acks")


def test_new_broker_late_hub(w):
    s = Setup(w, "gw-late", interval="200ms", hub_now=False)
    edge = s.start_edge()
    edge.wait_log("connected to", 10)
    time.sleep(30)  # the broker drops all of it: nobody subscribes yet
    s.start_hub()
    log("care-hub connected 30 s after the gateway")
    n, m = s.complete(beyond=30 * 5 * N_DEV, timeout=60)
    st = s.stop_edge()
    s.settle(st)
    log(f"brand-new broker, hub 30 s late: readings 1..{st['last_seq']} and alerts "
        f"1..{st['last_alert_seq']} stored once each ({n} and {m} before care-edge stopped)")


def test_shared_hubs(w):
    """Two hubs on a shared subscription each store part of the gateway's
    messages and acknowledge what they stored: the gateway frees everything."""
    s = Setup(w, "gw-shared", interval="200ms", hub_now=False)
    hubs = []
    for name in ("hub-a", "hub-b"):
        cfg = w.write(f"{name}.yaml", f"""
mqtt: {{broker: "{s.mqtt.uri}", client_id: {name}, shared_group: carehub}}
influx: {{url: "{s.influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: "{w.path(name + '-spool')}"}}
ack_interval: 300ms
""")
        hubs.append(w.spawn(name, [w.bin("care-hub"), "-c", cfg]))
        hubs[-1].wait_log("subscribed", 10)
    acks = w.spawn("acks", ["mosquitto_sub"] + s.mqtt.client_args() +
                   ["-q", "1", "-t", "carehub/ack/v1/#"], logpath=w.path("acks.log"))
    edge = s.start_edge()
    edge.wait_log("a hub acknowledges storage", 10)
    time.sleep(6)
    st = s.stop_edge()
    s.settle(st)
    assert "stay in the spool" not in edge.output(), edge.tail()
    acks.stop()
    by = {}
    with open(acks.logpath) as f:
        for line in f:
            doc = json.loads(line)
            by[doc["hub"]] = by.get(doc["hub"], 0) + 1
    assert set(by) == {"hub-a", "hub-b"}, by
    log(f"two hubs on a shared subscription: readings 1..{st['last_seq']} and alerts "
        f"1..{st['last_alert_seq']} stored once each, the gateway's spool empty; acks {by}")


def hub_lost(hub):
    """Numbers the hub logged as lost: (readings, alerts) as sets."""
    out = {"readings": set(), "alerts": set()}
    for what, lo, hi in re.findall(r"\] (readings|alerts) (\d+)\.\.(\d+) lost", hub.output()):
        out[what].update(range(int(lo), int(hi) + 1))
    return out["readings"], out["alerts"]


def edge_dropped(edge, lane):
    out = set()
    for lo, hi in re.findall(rf"dropped \d+ {lane} records \(ids (\d+)\.\.(\d+)", edge.output()):
        out.update(range(int(lo), int(hi) + 1))
    return out


def test_bound_while_hub_away(w):
    # 64 KiB (the least a gateway's spool may be) hold about 250 readings:
    # 100 readings/s overflow it in a few seconds
    # and 250 alerts at start: more than the spool holds, so once no
    # telemetry is left to drop, alerts are dropped too
    burst = "".join(f"  - {{id: burst-{i}, when: co2 > 0, priority: low, "
                    f"select: {{profile: [air-board]}}}}\n" for i in range(25))
    s = Setup(w, "gw-bound", max_bytes=65536, hub_now=False, extra_rules=burst)
    edge = s.start_edge()
    edge.wait_log("connected to", 10)
    wait_for("the spool's bound to drop readings and alerts",
             lambda: len(edge_dropped(edge, "telemetry")) > 300 and edge_dropped(edge, "alert"),
             30)
    s.start_hub()
    wait_for("the hub to acknowledge", lambda: "a hub acknowledges storage" in edge.output(), 20)

    def accounted(last_r, last_a):
        """Every reading and alert number up to the last is stored or lost."""
        r_lost, a_lost = hub_lost(s.hub)
        r_all, a_all = s.stored_numbers() | r_lost, set(s.alert_numbers()) | a_lost
        return (r_all >= set(range(1, last_r + 1)) and a_all >= set(range(1, last_a + 1)))
    wait_for("the backlog to be stored or reported lost",
             lambda: (lambda st: st and accounted(max(st), 1))(s.stored_numbers()), 40, 0.5)
    st = s.stop_edge()
    try:
        wait_for("every number stored or reported lost",
                 lambda: accounted(st["last_seq"], st["last_alert_seq"]), 30, 0.5)
    except AssertionError:
        raise AssertionError(f"{s.explain()}; hub lost {summary(list(hub_lost(s.hub)[0]))}")
    time.sleep(1.5)  # the hub's last counters
    r_lost, a_lost = hub_lost(s.hub)
    r_drop, a_drop = edge_dropped(edge, "telemetry"), edge_dropped(edge, "alert")
    assert len(a_drop) == st["alerts_dropped"], (len(a_drop), st["alerts_dropped"])
    stored = s.stored_numbers()
    assert not stored & r_lost, "a number reported lost is stored"
    # exactly what was evicted and that no one stored: evicted records the hub
    # had received (sent, but not acknowledged yet) are not lost. Readings
    # refused outright while alerts filled the spool are numbered too (their
    # log lines are rate-limited: counted, not listed)
    refused = st["dropped"] - len(r_drop)
    assert r_lost >= r_drop - stored, summary(list(r_drop - stored - r_lost))
    assert len(r_lost - r_drop) == refused, (summary(list(r_lost - r_drop)), refused)
    assert a_lost == a_drop - set(s.alert_numbers()), (a_lost, a_drop)
    first = min(n for n in stored if n > min(r_lost))
    assert min(r_lost) == 1 and first > 1, "numbers before the first the hub received are missed"
    metrics = s.influx.series('SELECT last("readings_missing") AS r, last("alerts_missing") AS a '
                              'FROM "carehub_hub"', DB)
    assert metrics and metrics[0]["r"] == len(r_lost) and metrics[0]["a"] == len(a_lost), metrics
    log(f"bound reached with no hub: edge evicted {len(r_drop)} readings ({st['dropped_sent']} "
        f"of them sent), refused {refused} and evicted {len(a_drop)} alerts; hub reports {len(r_lost)} readings and "
        f"{len(a_lost)} alerts lost ({summary(list(r_lost))}), exactly the evicted ones no one "
        f"stored ({len(r_drop & stored)} evicted were stored); the first number it received "
        f"after them was {first}")


if __name__ == "__main__":
    tests = {t.__name__: t for t in (test_broker_killed_empty, test_new_broker_late_hub,
                                     test_bound_while_hub_away, test_shared_hubs)}
    for name in sys.argv[1:] or tests:
        run_test(tests[name])
    print("delivery: passed")
