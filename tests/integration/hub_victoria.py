#!/usr/bin/env python3
"""care-hub writing to VictoriaMetrics (Debian's victoria-metrics) as if it
were InfluxDB 1.x: influx.version 1, the VictoriaMetrics URL,
create_database false, gzip on. Real Mosquitto, real care-hub.

VictoriaMetrics takes InfluxDB line protocol on /write and stores each field
as its own series: `measurement,tags field=v` becomes the metric
measurement_field with the tags as labels, plus db=<database>. It stores
numbers only: floats and integers as they are, booleans as 1/0, and a string
field as a series whose value is the string read as a number, so 0 for text
(Debian's 1.79). What the test checks:

- telemetry (the schema example, and numbered readings from a gateway):
  every float field and the seq integer readable back with the tags and
  timestamps it was written with; every reading number exactly once;
- the gateway status and two alarm transitions (alert lane): the numeric and
  boolean fields are there; the string fields (version, boot_id, metric,
  message, by) are series of 0: their text is lost;
- a redelivered message (QoS 1 redelivery, or a spool replay after a crash)
  leaves one sample per point, as InfluxDB's overwrite does, because the
  server runs with -dedup.minScrapeInterval=1ms (without it VictoriaMetrics
  keeps both samples);
- the hub's self-metrics (carehub_hub_* series, label hub) and its final
  counters show no write error, refusal, retry, dead letter or drop;
- but VictoriaMetrics answers 204 to rows it does not store: a reading more
  than 2 days in the future (a gateway's clock gone wrong) is dropped with a
  warning in its own log only, where InfluxDB would store it (so are rows
  older than -retentionPeriod, and lines it cannot parse): the hub counts
  them written and has nothing to put in its dead letter.

Skips (exit 77) only when /usr/bin/victoria-metrics is not installed.
"""
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mosquitto, free_port, log, run_test, wait_for  # noqa: E402

VM_BIN = os.environ.get("CAREHUB_VICTORIA", "/usr/bin/victoria-metrics")
SKIP = 77
EXAMPLES = os.path.join(os.environ.get("CAREHUB_SRC", os.path.join(os.path.dirname(__file__), "../..")),
                        "schemas", "examples")
DB = "carehub_vm"
HUB_ID = "hub-vm"
SITE, GW = "cq-yz-001", "gw-01"     # the examples' gateway
NSITE, NGW = "cq-vm-001", "gw-vm"   # the numbered readings' gateway
N_MSGS, PER_MSG = 60, 2


class Victoria:
    """victoria-metrics on 127.0.0.1, data in the test directory."""

    def __init__(self, world):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = world.spawn("victoria-metrics", [
            VM_BIN, f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={world.dir('victoria')}", "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms", "-search.disableCache", "-loggerLevel=WARN"])
        wait_for("VictoriaMetrics /health", self.healthy, 30)

    def healthy(self):
        with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
            return r.status == 200

    def export(self, match):
        """Every raw sample of the series matching a selector:
        [(labels without __name__, name, [(timestamp ms, value)])]."""
        urllib.request.urlopen(urllib.request.Request(self.url + "/internal/force_flush"),
                               timeout=10).read()
        q = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=10) as r:
            out = []
            for line in r.read().decode().splitlines():
                doc = json.loads(line)
                labels = dict(doc["metric"])
                name = labels.pop("__name__")
                out.append((labels, name, sorted(zip(doc["timestamps"], doc["values"]))))
            return out

    def one(self, name, **labels):
        """The samples of the one series name{labels...}."""
        sel = ",".join([f'__name__="{name}"'] + [f'{k}="{v}"' for k, v in labels.items()])
        got = self.export("{" + sel + "}")
        assert len(got) == 1, f"{name}{labels}: {len(got)} series: {got}"
        return got[0]


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return json.load(f)


def numbered(base, seq):
    return json.dumps({
        "schema": "carehub/telemetry/1", "site": NSITE, "gateway": NGW, "seq": seq, "ts": base + seq,
        "readings": [{"device": f"env-{k + 1}", "measurement": "vmtest", "room": "101",
                      "ts": base + seq + k, "quality": "good",
                      "metrics": {"temperature": 21.25 + k, "humidity": 48.5}}
                     for k in range(PER_MSG)]})


def hub_config(w, mqtt, vm):
    return w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: {HUB_ID}
influx:
  url: {vm.url}
  version: 1
  database: {DB}
  create_database: false
  gzip: true
  batch_size: 500
  flush_interval: 200ms
  timeout: 5s
  max_backoff: 1s
spool:
  dir: hub-spool
self_metrics_interval: 1s
log_level: debug
""")


def test_hub_victoria(w):
    t_start = time.monotonic()
    vm = Victoria(w)
    mqtt = Mosquitto(w)
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_config(w, mqtt, vm)])
    hub.wait_log(r"subscribed to carehub/v1/\+/\+/#")
    assert f"writing to {vm.url}/write?db={DB}&precision=ms" in hub.output(), hub.tail()

    status = example("status-online.json")
    telemetry = example("telemetry.json")
    raise_, ack = example("alert-raise.json"), example("alert-ack.json")
    mqtt.publish(f"carehub/v1/{SITE}/{GW}/status", json.dumps(status), retain=True)
    mqtt.publish(f"carehub/v1/{SITE}/{GW}/telemetry", json.dumps(telemetry))
    mqtt.publish(f"carehub/v1/{SITE}/{GW}/alert", json.dumps(raise_))
    mqtt.publish(f"carehub/v1/{SITE}/{GW}/alert", json.dumps(ack))
    base = int(time.time() * 1000) - 600_000
    msgs = [numbered(base, 1 + i * PER_MSG) for i in range(N_MSGS)]
    for m in msgs:
        mqtt.publish(f"carehub/v1/{NSITE}/{NGW}/telemetry", m)
    n_readings = N_MSGS * PER_MSG

    def seqs():
        got = vm.export('{__name__="vmtest_seq"}')
        return sorted(v for _, _, samples in got for _, v in samples)
    want = [float(s) for s in range(1, n_readings + 1)]
    wait_for("every numbered reading in VictoriaMetrics", lambda: seqs() == want, 20, 0.3)

    # a gateway whose clock is 5 days ahead: the hub takes the reading and
    # VictoriaMetrics answers 204 but does not store it (more than 2 days in
    # the future); InfluxDB would keep it
    future = int(time.time() * 1000) + 5 * 86_400_000
    mqtt.publish(f"carehub/v1/{NSITE}/gw-clock/telemetry", json.dumps({
        "schema": "carehub/telemetry/1", "site": NSITE, "gateway": "gw-clock", "seq": 1,
        "ts": future, "readings": [{"device": "env-1", "measurement": "vmclock", "ts": future,
                                    "quality": "good", "metrics": {"temperature": 20.0}}]}))

    # a redelivered message: the same points again, one sample each
    mqtt.publish(f"carehub/v1/{NSITE}/{NGW}/telemetry", msgs[7])
    again = rf"\[ingest:carehub/v1/{NSITE}/{NGW}/telemetry\] seq {1 + 7 * PER_MSG}: "
    wait_for("the redelivered message", lambda: len(re.findall(again, hub.output())) == 2, 10)
    published = 4 + N_MSGS + 2
    assert hub.stop() == 0, hub.tail()
    out = hub.output()
    finals = dict((k, int(v)) for k, v in re.findall(r" (\w+)=(\d+)", out.split("final counters:")[-1]))
    assert finals["messages_received"] == published, finals
    assert finals["telemetry_ok"] == N_MSGS + 3 and finals["alerts_ok"] == 2, finals
    for k in ("write_errors", "write_rejected", "write_retries", "dead_letter_batches", "dropped",
              "spool_dropped"):
        assert finals[k] == 0, (k, finals)
    assert "failed" not in out and "set aside" not in out, out
    # status, the example's readings, 2 alarms, numbered, redelivery, the clock gone wrong
    points = 1 + len(telemetry["readings"]) + 2 + n_readings + PER_MSG + 1
    assert finals["points_written"] >= points, finals  # and the carehub_hub points
    log(f"hub: {finals['points_written']} points written, no write error, refusal, retry or dead "
        f"letter")

    # the hub's own counters, as carehub_hub_* series. Their last point was
    # written at the stop, after everything else: VictoriaMetrics makes a
    # sample searchable a second or so after taking it, so once that point
    # shows, everything does (the redelivered message included)
    def hub_series():
        last = {}
        for labels, name, samples in vm.export('{__name__=~"carehub_hub_.*"}'):
            assert labels == {"db": DB, "hub": HUB_ID}, labels
            last[name[len("carehub_hub_"):]] = samples[-1][1]
        return last if set(last) == set(finals) and last["messages_received"] == published else None
    last = wait_for("the hub's last carehub_hub point", hub_series, 10, 0.3)
    for k in ("write_errors", "write_rejected", "dead_letter_batches", "dead_letter_lines",
              "dropped", "spool_dropped"):
        assert last[k] == 0, (k, last)
    log(f"self-metrics: PASS: {len(last)} carehub_hub_* series with label hub={HUB_ID}, the last "
        f"point (written at the stop) with messages_received={published}, no write error")

    # numbered readings: exactly once, redelivery included
    assert seqs() == want, "a reading is missing or doubled"
    got = vm.export('{__name__=~"vmtest_.*"}')
    assert {name for _, name, _ in got} == {"vmtest_temperature", "vmtest_humidity", "vmtest_seq"}
    for labels, name, samples in got:
        assert labels == {"db": DB, "device": labels["device"], "gateway": NGW, "quality": "good",
                          "room": "101", "site": NSITE}, labels
        k = int(labels["device"].split("-")[1]) - 1
        assert [t for t, _ in samples] == [base + 1 + i * PER_MSG + k for i in range(N_MSGS)], name
        if name == "vmtest_temperature":
            assert {v for _, v in samples} == {21.25 + k}, samples
    log(f"numbered: PASS: {n_readings} readings exactly once (one message delivered twice), "
        f"float fields and seq with their tags and timestamps")

    # the reading from the future: written as far as the hub can tell, not stored
    assert vm.export('{__name__=~"vmclock_.*"}') == []
    assert re.search(r"cannot insert row with too big timestamp \d+ exceeding the current time.*"
                     r"vmclock_temperature", vm.proc.output()), vm.proc.tail()
    log("clock: PASS: a reading 5 days ahead is answered 204 and dropped (logged by "
        "VictoriaMetrics only); the hub counts it written")

    # the schema example: float fields, tags, the reading's timestamp
    r = telemetry["readings"][0]
    tags = {"db": DB, "device": r["device"], "gateway": GW, "quality": "good", "room": r["room"],
            "site": SITE}
    for field, value in r["metrics"].items():
        labels, _, samples = vm.one(f"environment_{field}", **tags)
        assert labels == tags and samples == [(r["ts"], value)], (field, labels, samples)
    assert vm.one("environment_seq", **tags)[2] == [(r["ts"], telemetry["seq"])]

    # status: numbers and booleans kept, strings turned into 0
    st = {"db": DB, "gateway": GW, "site": SITE}
    assert vm.one("carehub_status_online", **st)[2] == [(status["ts"], 1)]
    lost = []
    for field in ("version", "boot_id"):
        assert vm.one(f"carehub_status_{field}", **st)[2] == [(status["ts"], 0)], field
        lost.append(f"carehub_status.{field}")

    # alarms: numbers and booleans kept, strings turned into 0
    for a in (raise_, ack):
        al = {"db": DB, "alarm_id": a["alarm_id"], "device": a["device"], "event": a["event"],
              "gateway": GW, "priority": a["priority"], "room": a["room"], "rule": a["rule"],
              "site": SITE, "state": a["state"]}
        for opt in ("bed", "resident"):
            if opt in a:
                al[opt] = a[opt]
        nums = {"value": a["value"], "escalation": a["escalation"], "latched": int(a["latched"]),
                "raised_ms": a["raised_ms"]}
        if "acked_ms" in a:
            nums["acked_ms"] = a["acked_ms"]
        for field, value in nums.items():
            labels, _, samples = vm.one(f"alarm_{field}", **al)
            assert labels == al and samples == [(a["ts_ms"], value)], (field, labels, samples)
        for field in ("metric", "message", "by"):
            if field in a:
                assert vm.one(f"alarm_{field}", **al)[2] == [(a["ts_ms"], 0)], field
                lost.append(f"alarm.{field}")
    texts = [status["version"], raise_["message"], ack["by"]]
    with urllib.request.urlopen(vm.url + "/api/v1/labels", timeout=10) as resp:
        label_names = json.loads(resp.read())["data"]
    for name in label_names:
        with urllib.request.urlopen(f"{vm.url}/api/v1/label/{name}/values", timeout=10) as resp:
            values = json.loads(resp.read())["data"]
        assert not set(texts) & set(values), (name, values)
    log(f"status and alarms: PASS: numeric and boolean fields kept; string fields stored as 0, "
        f"their text lost: {', '.join(sorted(set(lost)))}")

    log(f"hub_victoria: {time.monotonic() - t_start:.1f} s")


if __name__ == "__main__":
    if not os.access(VM_BIN, os.X_OK):
        print(f"SKIP: {VM_BIN} is not installed (Debian package victoria-metrics; "
              f"deploy/install-deps.sh --tests installs it)", flush=True)
        sys.exit(SKIP)
    run_test(test_hub_victoria)
    print("1 passed, 0 failed")
