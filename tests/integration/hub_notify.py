#!/usr/bin/env python3
"""care-hub tells the people off site (issue 13): a chain's duty manager is
told at escalation level 2 by the hub, the gateway having told the carers
at levels 0 and 1; through real Mosquitto, care-hub and InfluxDB, with
loopback stand-ins for a DingTalk robot (its signature checked) and a
webhook.

- a raise goes to the webhook (level 0 of the hub's route), an escalation
  to level 2 to DingTalk, signed, in Chinese with the names the gateway
  sent; level 1 is routed to nobody at the hub (the gateway's);
- a raise from a gateway's backlog (an hour old) is history: not told;
- each outcome is stored as a "notified" transition of the alarm (by: the
  channel's name, message: "钉钉 ok"), which /alarms/active leaves out:
  the alarm's state and message stay the gateway's;
- a notify: section with an unknown channel, or a notify_timezone that is
  not one, is refused by --check at its line.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, hub_yaml, log, run_test, wait_for  # noqa: E402
from notify_receivers import Receiver  # noqa: E402

DB = "carehub_hub_notify"
SITE, GW = "cq-yz-009", "gw-1"
SECRET = "SEC9876543210fedcba"


def notify_hub_yaml(mqtt, influx, hook, ding, levels="[[ops], [], [manager]]"):
    return hub_yaml(mqtt, influx, DB, "hub-notify", extra=f"""notify:
  channels:
    - {{id: ops, name: 运营值班, type: webhook, url: "{hook.url}"}}
    - {{id: manager, name: 区域经理, type: dingtalk, url: "{ding.url}", secret: {SECRET}}}
  routes:
    - priorities: [high]
      levels: {levels}
  retry: {{first: 500ms, max: 2s, give_up: 10m}}
notify_timezone: Asia/Shanghai
""")


def alert(event, level, ts, raised, state="unack"):
    a = {"schema": "carehub/alert/1", "site": SITE, "gateway": GW,
         "alarm_id": "wearable-fall:band-9", "rule": "wearable-fall", "device": "band-9",
         "room": "garden", "resident": "R-0909", "priority": "high", "state": state,
         "event": event, "escalation": level, "latched": True, "metric": "fall", "value": 1,
         "message": "赵爷爷 跌倒，位置：花园", "ts_ms": ts, "raised_ms": raised,
         "kind": "fall", "site_name": "沙坪坝 康宁养老院", "room_name": "花园",
         "resident_name": "赵爷爷"}
    return a


def test_hub_notify(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    with Receiver("webhook") as hook, Receiver("dingtalk", secret=SECRET) as ding:
        bad = w.write("bad.yaml", notify_hub_yaml(mqtt, influx, hook, ding, "[[ops], [nobody]]"))
        r = subprocess.run([w.bin("care-hub"), "--check", "-c", bad], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and "bad.yaml:" in r.stderr and "nobody" in r.stderr, r.stderr
        bad = w.write("bad-tz.yaml", notify_hub_yaml(mqtt, influx, hook, ding).replace(
            "Asia/Shanghai", "Mars/Olympus_Mons"))
        r = subprocess.run([w.bin("care-hub"), "--check", "-c", bad], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and "'notify_timezone'" in r.stderr, r.stderr

        hub = w.spawn("care-hub", [w.bin("care-hub"), "-c",
                                   w.write("hub.yaml", notify_hub_yaml(mqtt, influx, hook, ding))])
        hub.wait_log(r"subscribed to carehub/v1/\+/\+/#")
        topic = f"carehub/v1/{SITE}/{GW}/alert"
        now = int(time.time() * 1000)
        old = now - 3600 * 1000
        # a backlog's raise: an hour old
        mqtt.publish(topic, json.dumps(alert("raise", 0, old, old), ensure_ascii=False))
        raised = now
        mqtt.publish(topic, json.dumps(alert("raise", 0, raised, raised), ensure_ascii=False))
        mqtt.publish(topic, json.dumps(alert("escalate", 1, raised + 100, raised),
                                       ensure_ascii=False))
        mqtt.publish(topic, json.dumps(alert("escalate", 2, raised + 200, raised),
                                       ensure_ascii=False))

        got = wait_for("the webhook (level 0)", lambda: hook.accepted() or None, 15)
        wait_for("DingTalk (level 2)", lambda: ding.accepted() or None, 15)
        time.sleep(1.5)
        assert len(hook.accepted()) == 1, [x["json"] for x in hook.accepted()]
        body = got[0]["json"]
        assert body["raised_ms"] == raised and body["where"] == "花园", body
        assert len(ding.accepted()) == 1, [x["json"] for x in ding.accepted()]
        text = ding.accepted()[0]["json"]["text"]["content"]
        assert "跌倒" in text and "花园" in text and "赵爷爷" in text, text
        assert "sign" in ding.accepted()[0]["query"], ding.accepted()[0]

        rows = wait_for("two notified lines stored", lambda: (lambda r: r if len(r) >= 2 else None)(
            influx.series("SELECT * FROM \"alarm\" WHERE \"event\" = 'notified'", DB)), 15)
        lines = {(x["by"], x["escalation"], x["message"]) for x in rows}
        assert ("区域经理", 2, "钉钉 ok") in lines and ("运营值班", 0, "Webhook ok") in lines, lines
        assert all(x["raised_ms"] == raised and x["state"] == "unack" for x in rows), rows
        assert hub.stop() == 0, hub.tail()
    log("the hub told the webhook at level 0 and the signed DingTalk robot at level 2, once each; "
        "an hour-old raise not told; outcomes stored as notified lines")


if __name__ == "__main__":
    run_test(test_hub_notify)
