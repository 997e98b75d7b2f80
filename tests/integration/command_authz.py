"""Who may command what (issue 10, test 2): a command carries the identity its
receiver authenticated, and out_of_service / in_service are an admin's, on
every path.

One care site (care_site.py) with a CO2 alarm raised; console users nurse1
(staff) and boss (admin); the local broker; care-hub with its API and a
staff and an admin token for the site.

- Forged "by": an app on the local broker publishing as user nurse1
  (.../cmd/nurse1/ack) with "by": "console:boss", "role": "admin" is
  recorded as local:nurse1; a command on the uplink whose "by" is not a
  hub's is rejected.
- out_of_service by a staff identity is refused on every path, the alarm
  unchanged: the console (403), the local broker (nurse1, whatever role its
  payload claims), the hub API (staff token: 403, nothing published) and the
  uplink (a hub's command with role staff); the gateway counts each refusal
  (commands_denied in its self-metrics, a log line naming source and
  reason).
- From an admin it works: the hub API with the admin token takes the alarm
  out of service, boss on the local broker puts it back, boss on the console
  takes it out again.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Console, Influx, Mosquitto, free_port, log, new_tokens, run_test,  # noqa: E402
                     wait_for)
from care_site import GW, SITE, USER, hash_password, site_config, start_sim  # noqa: E402

DB = "carehub"
PASSWORD = "correct horse battery"
ADMIN, ADMIN_PW = "boss", "staple battery horse"
AID = "co2-high:nap-co2"


def command(action, by, role=None, **extra):
    doc = {"schema": "carehub/command/1", "action": action, "alarm_id": AID, "by": by,
           "ts_ms": int(time.time() * 1000)}
    if role:
        doc["role"] = role
    doc.update(extra)
    return json.dumps(doc)


def make_tokens(w):
    secrets, path, _ = new_tokens(w, {"nurse-token": f"role: staff\n    sites: [{SITE}]",
                                      "admin-token": "role: admin\n    sites: [\"*\"]"})
    return secrets, path


def api_command(port, token, action):
    body = json.dumps({"site": SITE, "gateway": GW, "alarm_id": AID, "action": action}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/commands", data=body,
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def state(con):
    st, body = con.request("GET", "/api/alarms")
    assert st == 200, (st, body)
    return {a["alarm_id"]: a for a in body["alarms"]}.get(AID, {}).get("state")


def history(con, event):
    st, body = con.request("GET", "/api/history?hours=1")
    assert st == 200, body
    return [h for h in body["history"] if h["alarm_id"] == AID and h["event"] == event]


def test_commands_by_identity(w):
    influx = Influx(w)
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    secrets, tokens = make_tokens(w)
    api_port = free_port()
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", w.write("hub.yaml", f"""
mqtt: {{broker: "{central.uri}", client_id: hub-authz}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: "{w.path('hub-spool')}"}}
api: {{port: {api_port}, tokens_file: {tokens}}}
self_metrics_interval: 1s
""")])
    hub.wait_log("subscribed", 10)
    sim, mb_port = start_sim(w, "  - {at: 1s, slave: nap-co2, set: {metric: co2, ramp_to: 2200, "
                                "over: 1s}}\n")
    cport = free_port()
    site = site_config(w, mb_port, central, cport, PASSWORD, local=local)
    with open(site) as f:
        text = f.read()
    users = f'users: [{{name: {USER}, password_hash: "'
    assert users in text
    text = text.replace(users, f'users: [{{name: {ADMIN}, role: admin, password_hash: '
                               f'"{hash_password(w, ADMIN_PW)}"}}, {{name: {USER}, '
                               f'password_hash: "')
    with open(site, "w") as f:
        f.write(text)
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log("serving the alarm console", 10)
    nurse = Console(cport, USER, PASSWORD)
    boss = Console(cport, ADMIN, ADMIN_PW)
    assert nurse.status == 200 and boss.status == 200
    wait_for("the CO2 alarm", lambda: state(nurse) == "unack", 20)
    wait_for("the gateway online at the hub",
             lambda: api_command(api_port, secrets["nurse-token"], "unshelve")[0] != 409, 10)
    base = f"carehub/v1/{SITE}/{GW}"

    # ---- forged identities --------------------------------------------------------
    edge.wait_log(r"\[local-mqtt\] listening for commands on ", 10)  # else a publish is lost
    local.publish(f"{base}/cmd/{USER}/ack", command("ack", f"console:{ADMIN}", "admin"))
    wait_for("the acknowledgement", lambda: state(nurse) == "acked", 10)
    acks = history(nurse, "ack")
    assert [h["by"] for h in acks] == [f"local:{USER}"], acks
    central.publish(f"{base}/cmd/shelve", command("shelve", "nurse1", duration_ms=60000))
    edge.wait_log(r"command on cmd/shelve rejected: a command from the hub names its asker", 10)
    log("a forged 'by' is replaced by the identity the receiver authenticated")

    # ---- out_of_service from staff: refused on every path ------------------------------
    st, body = nurse.request("POST", f"/api/alarms/{AID}/out_of_service", {})
    assert st == 403, (st, body)
    local.publish(f"{base}/cmd/{USER}/out_of_service", command("out_of_service", "x", "admin"))
    st, body = api_command(api_port, secrets["nurse-token"], "out_of_service")
    assert st == 403 and "admin" in body.get("message", ""), (st, body)
    central.publish(f"{base}/cmd/out_of_service", command("out_of_service", "hub:nurse-token",
                                                          "staff"))
    refusals = wait_for("three refusals logged", lambda: (lambda r: r if len(r) == 3 else None)(
        re.findall(r"\[edge:([a-z-]+)\] out_of_service of \S+ by (\S+) \(staff\) refused: only an "
                   r"admin", edge.output())), 10)
    assert sorted(refusals) == sorted([("console", f"console:{USER}"),
                                       ("local-mqtt", f"local:{USER}"),
                                       ("uplink", "hub:nurse-token")]), refusals
    assert state(nurse) == "acked"
    denied = wait_for("commands_denied in the gateway's self-metrics", lambda: (lambda r: r if r and
                      r[0]["d"] == 3 else None)(influx.series(
                          'SELECT last("commands_denied") AS d FROM "edge_gateway"', DB)), 15)
    log(f"out_of_service by staff refused on the console, the local broker, the hub API and the "
        f"uplink; the gateway counted {denied[0]['d']}")

    # ---- from an admin it works, on every path -----------------------------------------
    st, body = api_command(api_port, secrets["admin-token"], "out_of_service")
    assert st == 202, (st, body)
    wait_for("out of service by the hub's admin", lambda: state(nurse) == "out_of_service", 10)
    assert history(nurse, "out_of_service")[-1]["by"] == "hub:admin-token"
    local.publish(f"{base}/cmd/{ADMIN}/in_service", command("in_service", "whoever"))
    wait_for("back in service by the local admin", lambda: state(nurse) != "out_of_service", 10)
    assert history(nurse, "in_service")[-1]["by"] == f"local:{ADMIN}"
    st, body = boss.request("POST", f"/api/alarms/{AID}/out_of_service", {})
    assert st == 200 and body["by"] == f"console:{ADMIN}", (st, body)
    assert state(nurse) == "out_of_service"
    assert len(re.findall(r"refused: only an admin", edge.output())) == 3
    assert edge.stop() == 0, edge.tail()
    log("an admin takes the alarm out of service and back through the hub, the local broker "
        "and the console")


if __name__ == "__main__":
    run_test(test_commands_by_identity)
    print("command_authz: 1 passed, 0 failed")
