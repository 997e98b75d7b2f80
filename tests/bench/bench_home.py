"""care-edge's footprint with a full care home (issue 5): 120 residents, each
with a BLE bracelet (1 advertisement/s, heard through 12 receivers, 4 in each
of the OpenMQTTGateway, Minew and Ingics formats) and a Wi-Fi bed sensor
(a message every 5 s), plus 60 Modbus air boards (every 10 s), all played by
care-sim; care-edge publishes to a central Mosquitto. Prints care-edge's
resident memory (VmRSS now, VmHWM peak, from /proc) and CPU over the run, and
care-sim's. A benchmark: never passes or fails on a number.

  python3 tests/bench/bench_home.py [--residents 120] [--meters 60] [--seconds 30]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import SRC, Mosquitto, World, free_port, log  # noqa: E402

FORMATS = [("omg", '["home/+/BTtoMQTT/#"]'), ("minew", '["gw/+/status"]'), ("ingics", '["ingics/#"]')]
RX_PER_FORMAT = 4


def proc_stat(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if len(l.split()) > 1}
    return cpu, int(status["VmRSS"]) / 1024, int(status["VmHWM"]) / 1024


def rx_id(f, k):
    name, _ = FORMATS[f]
    return f"gw-{name}-{k}" if name == "omg" else f"AC233FA0{f:02X}{k:02X}"


def home(w, residents, meters, local, central, uplink_extra=""):
    """The full home's care-sim and care-edge configurations: (sim.yaml,
    site.yaml) paths in w. uplink_extra: more uplink keys ("k: v, ...")."""
    modbus = free_port()
    # one zone per receiver: a wing of rooms; zones of one format in a row
    zones, receivers, buses = [], [], []
    for f, (fmt, topics) in enumerate(FORMATS):
        zl = []
        for k in range(RX_PER_FORMAT):
            z = f"wing-{f}-{k}"
            adj = f", adjacent: [wing-{f}-{k + 1}]" if k + 1 < RX_PER_FORMAT else ""
            zones.append(f"  - {{id: {z}{adj}}}")
            receivers.append(f"  - {{id: {rx_id(f, k)}, format: {fmt}, zone: {z}}}")
            zl.append(f"        - {{id: {z}, receivers: [{rx_id(f, k)}]}}")
        buses.append(f"""  - id: ble-{fmt}
    type: ble
    host: 127.0.0.1
    port: {local.port}
    format: {fmt}
    topics: {topics}
    location:
      zones:
""" + "\n".join(zl))
    wear, beds, edge_devs, res = [], [], [], []
    n_zones = len(FORMATS) * RX_PER_FORMAT
    for i in range(residents):
        z = i % n_zones
        f = z // RX_PER_FORMAT
        mac = f"C3:00:00:00:{i // 256:02X}:{i % 256:02X}"
        wear.append(f'  - {{mac: "{mac}", resident: r{i:03d}, home: wing-{f}-{z % RX_PER_FORMAT}}}')
        beds.append(f"  - {{name: bed-{i:03d}, topic: sensors/bed/{i:03d}/state, resident: r{i:03d}}}")
        edge_devs.append(f'  - {{id: band-{i:03d}, bus: ble-{FORMATS[f][0]}, mac: "{mac}", '
                         f"profile: care-band, interval: 1s}}")
        edge_devs.append(f"  - {{id: bed-{i:03d}, bus: wifi, topic: sensors/bed/{i:03d}/state, "
                         f"profile: wifi-bed, interval: 5s, room: r{i:03d}}}")
        res.append(f"  - {{id: R-{i:03d}, room: r{i:03d}, devices: [band-{i:03d}, bed-{i:03d}]}}")
    for m in range(meters):
        edge_devs.append(f"  - {{id: air-{m + 1:03d}, bus: lan, slave: {m + 1}, profile: air-board, "
                         f"interval: 10s, room: a{m + 1:03d}}}")
    nl = "\n"
    sim_cfg = w.write("sim.yaml", f"""
seed: 1
mqtt: {{broker: "{local.uri}"}}
endpoints: [{{id: lan, tcp: "127.0.0.1:{modbus}"}}]
slaves: [{{name: air, endpoint: lan, unit: 1, model: air-board, count: {meters}}}]
zones:
{nl.join(zones)}
receivers:
{nl.join(receivers)}
wearables:
{nl.join(wear)}
wifi_beds:
{nl.join(beds)}
""")
    site = w.write("site.yaml", f"""
site: bench-home
gateway: gw-h
uplink: {{broker: "{central.uri}"{", " + uplink_extra if uplink_extra else ""}}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
rule_packs: [{SRC}/deploy/rules/elderly-care.yaml]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus}}}
  - {{id: wifi, type: mqtt, host: 127.0.0.1, port: {local.port}}}
{nl.join(buses)}
devices:
{nl.join(edge_devs)}
residents:
{nl.join(res)}
""")
    return sim_cfg, site, len(receivers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=120)
    ap.add_argument("--meters", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    w = World("bench_home")
    try:
        local = Mosquitto(w, name="local")
        central = Mosquitto(w, name="central")
        # no hub here: the PUBACK frees what the edge sends
        sim_cfg, site, n_rx = home(w, a.residents, a.meters, local, central, "delivery: broker")
        cap = central.subscribe("carehub/v1/bench-home/gw-h/telemetry", "capture")
        sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg, "--stats-interval", "0"])
        sim.wait_log(r"\[sim:mqtt\] connected", 10)
        edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
        edge.wait_log(r"\[ble:ble-ingics\] connected", 15)
        time.sleep(3)  # every device heard once, buffers at their working size
        c0, _, _ = proc_stat(edge.pid)
        s0, _, _ = proc_stat(sim.pid)
        t0 = time.monotonic()
        rss_max = 0.0
        while time.monotonic() - t0 < a.seconds:
            time.sleep(1)
            _, rss, _ = proc_stat(edge.pid)
            rss_max = max(rss_max, rss)
        c1, rss, hwm = proc_stat(edge.pid)
        per = {}
        with open(cap.logpath, errors="replace") as f:
            for line in f:
                _, _, payload = line.partition("\t")
                try:
                    for r in json.loads(payload)["readings"]:
                        per[r["measurement"]] = per.get(r["measurement"], 0) + 1
                except (ValueError, KeyError):
                    pass
        s1, srss, _ = proc_stat(sim.pid)
        dt = time.monotonic() - t0
        n_dev = 2 * a.residents + a.meters
        log(f"full home: {a.residents} residents ({a.residents} BLE bracelets via "
            f"{n_rx} receivers in 3 formats, {a.residents} Wi-Fi beds), "
            f"{a.meters} Modbus meters = {n_dev} devices, {dt:.0f} s")
        log(f"care-edge: VmRSS {rss:.1f} MiB (max sampled {rss_max:.1f}), VmHWM {hwm:.1f} MiB, "
            f"CPU {100 * (c1 - c0) / dt:.1f} % of one core")
        log("readings published over the whole run: " +
            ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
        log(f"care-sim:  VmRSS {srss:.1f} MiB, CPU {100 * (s1 - s0) / dt:.1f} % of one core")
        print(f"RESULT devices={n_dev} edge_rss_mib={rss:.1f} edge_hwm_mib={hwm:.1f} "
              f"edge_cpu_pct={100 * (c1 - c0) / dt:.1f} sim_cpu_pct={100 * (s1 - s0) / dt:.1f}")
        edge.stop()
        sim.stop()
    finally:
        w.close()


if __name__ == "__main__":
    main()
