"""One small care site shared by the alarm tests: care-sim on Modbus TCP with
an air board in a nap room (nap-co2), a nurse-call panel in room 203
(panel-203, resident R-0417 in bed 203-A) and a 4-channel relay (relay-9)
for the sounder; care-edge with a CO2 rule and a latched SOS rule, its
console on 127.0.0.1 with one staff user, and optionally the local broker
and the sounder coil."""
import json
import subprocess

from harness import SRC, free_port

SITE, GW = "sunny-home", "gw-1"
USER = "nurse1"


def hash_password(w, password):
    r = subprocess.run([w.bin("care-edge"), "--hash-password"], input=password + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("$"), r.stderr
    return r.stdout.strip()


def start_sim(w, scenario):
    """care-sim with the site's three devices; scenario: YAML list items."""
    port = free_port()
    cfg = w.write("sim.yaml", f"""
seed: 11
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: nap-co2, endpoint: lan, unit: 1, model: air-board}}
  - {{name: panel-203, endpoint: lan, unit: 2, model: call-panel}}
  - {{name: relay-9, endpoint: lan, unit: 9, model: relay-4ch}}
scenario:
{scenario}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", cfg])
    sim.wait_log("care-sim ready", 10)
    return sim, port


def site_config(w, modbus_port, central, console_port, password, local=None, sounder=False,
                sounder_priorities="high, medium"):
    extra = ""
    if local:
        extra += f'local_mqtt: {{broker: "{local.uri}"}}\n'
    if sounder:
        extra += "annunciators:\n  - {id: sounder, bus: lan, slave: 9, coil: 0, priorities: [" + sounder_priorities + "]}\n"
    return w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
timezone: Asia/Shanghai
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port}, timeout: 500ms}}
devices:
  - {{id: nap-co2, bus: lan, slave: 1, profile: air-board, interval: 300ms, room: nap-1}}
  - {{id: panel-203, bus: lan, slave: 2, profile: call-panel, interval: 300ms, room: "203"}}
residents:
  - {{id: R-0417, room: "203", bed: 203-A, devices: [panel-203]}}
rules:
  - id: co2-high
    description: nap room CO2 above GB/T 18883-2022's 0.10 %
    when: co2 > 1000
    for: 1s
    deadband: 100
    priority: medium
    select: {{profile: [air-board]}}
    message: "CO2 {{value}} ppm in {{room}}"
  - id: sos
    when: sos == 1
    latch: true
    priority: high
    select: {{kind: [call]}}
    message: "SOS pulled in {{room}} ({{resident}})"
console:
  enabled: true
  bind: 127.0.0.1
  port: {console_port}
  users: [{{name: {USER}, password_hash: "{hash_password(w, password)}"}}]
self_metrics_interval: 1s
{extra}""")


def messages(capture, suffix):
    """Parsed payloads a capture (harness Mosquitto.subscribe) saw on topics
    ending in suffix."""
    out = []
    with open(capture.logpath, errors="replace") as f:
        for line in f:
            topic, _, payload = line.rstrip("\n").partition("\t")
            if topic.endswith(suffix) and payload:
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    pass
    return out


def sos_readings(capture):
    """The panel's sos values, in order, from a capture of its telemetry."""
    return [r["metrics"]["sos"] for doc in messages(capture, "/telemetry")
            for r in doc.get("readings", [])
            if r.get("device") == "panel-203" and "sos" in r.get("metrics", {})]
