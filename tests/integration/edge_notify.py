#!/usr/bin/env python3
"""care-edge tells people (issue 13): an SOS nobody acknowledges escalates
through three levels to three loopback receivers standing in for a WeCom
group robot (level 0, the carers on duty), an SMS gateway (level 1, the
nurse in charge) and a DingTalk robot with its signature (level 2, the
manager); through real Mosquitto brokers and care-edge's ble bus.

- each level reaches its receiver once, in the channel's documented format
  (WeCom text with the mentioned phone, the SMS template with the number,
  DingTalk signed: the stand-in refuses a bad sign as DingTalk does), in
  Chinese, naming kind, where and who;
- every delivery is a "notified" line of the alarm's history, on the wire
  and in the console: by = the channel's name, message = its outcome;
- another SOS acknowledged at once is told at level 0 only: the
  acknowledgement stops the escalation, and the ack is told to who got it;
- WeCom answering 503 and then down for a while gets its message after it
  comes back, once;
- a changed notify: section at a reload (SIGHUP) is said to take a restart.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Console, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import hash_password, messages  # noqa: E402
from notify_receivers import Receiver  # noqa: E402

BANDS = {"band-wang": ("C3:00:00:AB:CD:31", "R-1001", "王奶奶"),
         "band-li": ("C3:00:00:AB:CD:32", "R-1002", "李爷爷")}
SECRET = "SEC0123456789abcdef"
PASSWORD = "night shift 2026"


def adv(local, mac, flags=0x04):
    payload = {"id": mac, "rssi": -50, "manufacturerdata": f"ffff5a{flags:02x}48"}
    local.publish(f"home/gw-201/BTtoMQTT/{mac.replace(':', '')}", json.dumps(payload))


def site_yaml(central, local, w, wecom, sms, ding, cport):
    bands = "".join(
        f"  - {{id: {d}, bus: ble, mac: \"{mac}\", profile: care-band, interval: 250ms}}\n"
        for d, (mac, _, _) in BANDS.items())
    residents = "".join(
        f"  - {{id: {rid}, name: {name}, room: \"201\", devices: [{d}]}}\n"
        for d, (_, rid, name) in BANDS.items())
    return f"""
site: notify-home
gateway: gw-n
site_name: 幸福里养老院
locale: zh-CN
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
timezone: Asia/Shanghai
rooms: [{{id: room-201, name: 2楼 201房}}]
buses:
  - id: ble
    type: ble
    host: 127.0.0.1
    port: {local.port}
    format: omg
    topics: ["home/+/BTtoMQTT/#"]
    out_of_range: 60s
    location:
      zones: [{{id: room-201, receivers: [gw-201]}}]
devices:
{bands}residents:
{residents}rules:
  - {{id: sos, kind: sos, when: sos == 1, latch: true, priority: high, escalate: 2s,
     escalate_max: 2, select: {{kind: [wearable]}},
     message: {{zh-CN: "{{resident}} 紧急呼叫，位置：{{room}}", en: "SOS from {{resident}} at {{room}}"}}}}
console:
  enabled: true
  bind: 127.0.0.1
  port: {cport}
  users: [{{name: 护士小王, password_hash: "{hash_password(w, PASSWORD)}"}}]
notify:
  channels:
    - {{id: carers, name: 值班护理员群, type: wecom, url: "{wecom.url}", mention: ["13800000001"]}}
    - id: nurse
      name: 护士长
      type: sms
      url: "{sms.url}"
      to: ["13900000002"]
      template: '{{"to":"{{to}}","text":"{{text}}"}}'
    - {{id: manager, name: 院长, type: dingtalk, url: "{ding.url}", secret: {SECRET}}}
  rosters:
    on-duty:
      - {{time: "00:00-12:00", channels: [carers]}}
      - {{time: "12:00-00:00", channels: [carers]}}
  routes:
    - priorities: [high]
      levels: [[on-duty], [nurse], [manager]]
      events: [raise, escalate, ack]
  retry: {{first: 500ms, max: 2s, give_up: 10m}}
self_metrics_interval: 1s
"""


def notified(cap, alarm_id):
    return [a for a in messages(cap, "/alert")
            if a["alarm_id"] == alarm_id and a["event"] == "notified"]


def test_edge_notify(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    with Receiver("wecom") as wecom, Receiver("sms") as sms, \
            Receiver("dingtalk", secret=SECRET) as ding:
        cport = free_port()
        site = w.write("site.yaml", site_yaml(central, local, w, wecom, sms, ding, cport))
        cap = central.subscribe("carehub/v1/notify-home/gw-n/#", "capture")
        edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
        edge.wait_log(r"\[ble:ble\] connected", 10)
        time.sleep(0.3)
        wang, li = BANDS["band-wang"][0], BANDS["band-li"][0]
        for _ in range(2):
            adv(local, wang)
            adv(local, li)
            time.sleep(0.3)

        # band-li: SOS, acknowledged at once on the console
        con = Console(cport, "护士小王", PASSWORD)
        assert con.status == 200, con.status
        adv(local, li, flags=0x05)
        adv(local, li)
        edge.wait_log(r"\[alarm:sos:band-li\] raise", 5)
        st, body = con.request("POST", "/api/alarms/sos:band-li/ack", {})
        assert st == 200, (st, body)

        # band-wang: SOS, nobody answers; WeCom fails first, then is down
        wecom.mode = "503"
        adv(local, wang, flags=0x05)
        adv(local, wang)
        t_raise = time.time()
        edge.wait_log(r"\[alarm:sos:band-wang\] raise", 5)
        wait_for("a refused try at WeCom", lambda: len(wecom.records) >= 2, 10)
        wecom.down()
        time.sleep(2)
        wecom.mode = "ok"
        wecom.up()

        def told(r, who):
            return [x for x in r.accepted() if who in json.dumps(x["json"], ensure_ascii=False)]

        got = wait_for("level 0 (WeCom) for 王奶奶", lambda: told(wecom, "王奶奶") or None, 20)
        body = got[0]["json"]
        assert body["msgtype"] == "text", body
        assert body["text"]["mentioned_mobile_list"] == ["13800000001"], body
        text = body["text"]["content"]
        assert "紧急呼叫" in text and "2楼 201房" in text and "王奶奶" in text, text
        wait_for("level 1 (SMS)", lambda: told(sms, "王奶奶") or None, 20)
        sbody = told(sms, "王奶奶")[0]["json"]
        assert sbody["to"] == "13900000002" and "王奶奶" in sbody["text"], sbody
        wait_for("level 2 (DingTalk, signed)", lambda: told(ding, "王奶奶") or None, 20)
        dbody = told(ding, "王奶奶")[0]
        assert dbody["json"]["msgtype"] == "text" and "sign" in dbody["query"], dbody
        log(f"SOS of 王奶奶 told at three levels within {time.time() - t_raise:.1f} s "
            "(WeCom after 503s and a 2 s outage)")

        # exactly once each, and the history says so
        time.sleep(1.5)
        assert len(told(wecom, "王奶奶")) == 1, told(wecom, "王奶奶")
        assert len(told(sms, "王奶奶")) == 1 and len(told(ding, "王奶奶")) == 1
        lines = wait_for("three notified lines", lambda: (lambda n: n if len(n) >= 3 else None)(
            notified(cap, "sos:band-wang")), 10)
        by = {(x["by"], x["escalation"]) for x in lines}
        assert by == {("值班护理员群", 0), ("护士长", 1), ("院长", 2)}, by
        assert all(x["state"] == "unack" and x["kind"] == "sos" for x in lines), lines
        assert any(x["message"] == "企业微信 ok" for x in lines), lines
        assert any(x["message"] == "短信 139****0002 ok" for x in lines), lines
        st, hist = con.request("GET", "/api/history?hours=1")
        assert st == 200 and any(h.get("event") == "notified" for h in hist["history"]), hist

        # band-li: level 0 and the acknowledgement, never level 1 or 2
        assert len(told(wecom, "李爷爷")) >= 1, wecom.records
        assert not told(sms, "李爷爷") and not told(ding, "李爷爷"), "escalated after the ack"
        ack_told = [x for x in told(wecom, "李爷爷") if "护士小王" in x["json"]["text"]["content"]]
        assert ack_told, [x["json"] for x in told(wecom, "李爷爷")]

        # who is told is fixed at the start: a reload says a restart applies it
        with open(site, encoding="utf-8") as f:
            text = f.read()
        with open(site, "w", encoding="utf-8") as f:
            f.write(text.replace("name: 院长", "name: 副院长"))
        edge.p.send_signal(signal.SIGHUP)
        edge.wait_log(r"the notify section changed, which takes a restart", 10)
        assert edge.stop() == 0, edge.tail()
    log("notifications: three levels, once each, ack stops escalation, history lines kept")


if __name__ == "__main__":
    run_test(test_edge_notify)
