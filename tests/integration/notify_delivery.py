"""The notifier end to end (common/notify.c through tests/integration/
notify_driver): loopback stand-ins for WeCom, an SMS gateway, DingTalk and
Feishu (notify_receivers.py) and a YAML config pointing at them.

1. raise -> level 0 (a roster) reaches the WeCom robot, once;
   escalate 1 -> the SMS gateway (one request per number, JSON-escaped);
   escalate 2 -> DingTalk and Feishu, their signatures checked by the
   stand-ins; a repeated event is deduped.
2. an ACK cancels a pending escalation (SMS answering 503): final
   "cancelled: acknowledged", the gateway never gets it once it is back;
   the ack goes to the channel that got the raise.
3. a receiver answering 503 and then down for ~5 s gets its message after
   it returns, exactly once; the failed tries are reported, not final.
4. a restart of the driver with a delivery pending in state_dir delivers
   it once; the same event fed again after the restart is deduped; a
   second restart sends nothing more.
Everything on 127.0.0.1, every wait bounded.
"""
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from notify_receivers import Receiver  # noqa: E402

BIN = os.environ.get("CAREHUB_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
DING_SECRET = "SECtest0123456789abcdef"
FEISHU_SECRET = "feishu-secret-xyz"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Driver:
    def __init__(self, config, state):
        self.lines = queue.Queue()
        self.results = []
        self.p = subprocess.Popen([os.path.join(BIN, "notify_driver"), config, state],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=sys.stderr, text=True, bufsize=1)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.expect("ready", 10)

    def _read(self):
        for line in self.p.stdout:
            tag, _, rest = line.strip().partition(" ")
            doc = json.loads(rest) if rest else {}
            if tag == "result":
                self.results.append(doc)
            self.lines.put((tag, doc))

    def expect(self, tag, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                t, doc = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if t == tag:
                return doc
        raise AssertionError(f"driver: no '{tag}' within {timeout}s")

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def event(self, **ev):
        self.send("event " + json.dumps(ev, ensure_ascii=False))

    def stats(self):
        self.send("stats")
        return self.expect("stats", 5)

    def wait_result(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.results):
                if pred(r):
                    return r
            time.sleep(0.05)
        raise AssertionError(f"no such result within {timeout}s: {self.results!r}")

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                rc = self.p.wait(20)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(5)
                raise AssertionError("notify_driver did not quit")
            # a sanitizer build exits non-zero on a leak or an error
            assert rc == 0, f"notify_driver exited with {rc}"


def alarm(alarm_id, event="raise", level=0, raised_ms=None, **kw):
    now = int(time.time() * 1000)
    ev = {"site": "sunrise", "site_name": "夕阳红养老院", "gateway": "gw1",
          "alarm_id": alarm_id, "rule": "fall", "kind": "fall", "title": "跌倒",
          "where": "3楼东区301 301-床A", "who": "王奶奶", "device": "radar-301",
          "message": '检测到跌倒 "床边"\\ 请立即查看\n第二行', "priority": 2,
          "level": level, "event": event, "raised_ms": raised_ms or now, "ts_ms": now}
    ev.update(kw)
    return ev


def main():
    tmp = tempfile.mkdtemp(prefix="notify-delivery-")
    state = os.path.join(tmp, "state")
    wecom = Receiver("wecom")
    sms = Receiver("sms")
    ding = Receiver("dingtalk", secret=DING_SECRET)
    feishu = Receiver("feishu", secret=FEISHU_SECRET)
    receivers = [wecom, sms, ding, feishu]
    config = os.path.join(tmp, "notify.yaml")
    with open(config, "w") as f:
        f.write(f"""
notify:
  channels:
    - id: carers-wecom
      name: 值班护理员群
      type: wecom
      url: {wecom.url}
      mention: ["13800000000"]
    - id: nurse-sms
      name: 护士长
      type: sms
      url: {sms.url}
      headers: {{Authorization: "Bearer xyz"}}
      to: ["13900000000", "13900000001"]
      template: '{{"to":"{{to}}","text":"{{title}} {{where}} {{who}} {{time}} {{message}}"}}'
    - id: manager-ding
      name: 院长
      type: dingtalk
      url: {ding.url}
      secret: {DING_SECRET}
    - id: team-feishu
      name: 运营群
      type: feishu
      url: {feishu.url}
      secret: {FEISHU_SECRET}
      locale: en
  rosters:
    on-duty:
      - {{time: "00:00-12:00", channels: [carers-wecom]}}
      - {{time: "12:00-00:00", channels: [carers-wecom]}}
  routes:
    - priorities: [high]
      levels:
        - [on-duty]
        - [nurse-sms]
        - [manager-ding, team-feishu]
      events: [raise, escalate, ack]
  retry: {{first: 300ms, max: 1s, give_up: 60s}}
""")
    d = None
    try:
        d = Driver(config, state)

        # 1. raise, escalate 1, escalate 2
        raised = int(time.time() * 1000)
        d.event(**alarm("fall:radar-301", raised_ms=raised))
        got = wecom.wait_count(1, 10)
        text = got[0]["json"]["text"]
        assert text["content"].startswith("【紧急】跌倒 · 3楼东区301 301-床A · 王奶奶\n"), text
        assert text["mentioned_mobile_list"] == ["13800000000"], text
        d.event(**alarm("fall:radar-301", "escalate", 1, raised_ms=raised))
        got = sms.wait_count(2, 10)
        tos = sorted(r["json"]["to"] for r in got)
        assert tos == ["13900000000", "13900000001"], tos
        assert got[0]["headers"].get("Authorization") == "Bearer xyz", got[0]["headers"]
        assert got[0]["json"]["text"].endswith('检测到跌倒 "床边"\\ 请立即查看\n第二行'), got[0]
        d.event(**alarm("fall:radar-301", "escalate", 2, raised_ms=raised))
        got = ding.wait_count(1, 10)
        assert "第2次升级" in got[0]["json"]["text"]["content"], got[0]
        got = feishu.wait_count(1, 10)
        assert "escalation 2" in got[0]["json"]["content"]["text"], got[0]
        assert not [r for r in ding.records + feishu.records if not r["ok"]], "signature refused"
        d.event(**alarm("fall:radar-301", "escalate", 1, raised_ms=raised))  # again: deduped
        time.sleep(1)
        assert len(sms.accepted()) == 2 and len(wecom.accepted()) == 1
        st = d.stats()
        # counted per delivery, as queued is: the SMS channel's two numbers
        assert st["deduped"] == 2 and st["sent"] == 5, st
        log(f"1. raise/escalate reached WeCom, SMS x2, DingTalk, Feishu; stats {st}")

        # 2. ACK cancels a pending escalation
        sms.mode = "503"
        raised_b = int(time.time() * 1000)
        d.event(**alarm("sos:btn-12", raised_ms=raised_b, kind="sos", title="紧急呼叫"))
        wecom.wait_count(1, 10, lambda r: "紧急呼叫" in r["json"]["text"]["content"])
        d.event(**alarm("sos:btn-12", "escalate", 1, raised_ms=raised_b, kind="sos",
                        title="紧急呼叫"))
        d.wait_result(lambda r: r["alarm_id"] == "sos:btn-12" and r["level"] == 1
                      and not r["ok"] and not r["final"] and r["detail"] == "HTTP 503", 10)
        d.event(**alarm("sos:btn-12", "ack", 1, raised_ms=raised_b, kind="sos",
                        title="紧急呼叫", by="护士小王"))
        for to in ("13900000000", "13900000001"):
            d.wait_result(lambda r, to=to: r["alarm_id"] == "sos:btn-12" and r["final"]
                          and r["to"] == to and r["detail"] == "cancelled: acknowledged", 5)
        got = wecom.wait_count(1, 10, lambda r: r["json"]["text"]["content"].startswith("已确认 紧急呼叫"))
        assert "确认人 护士小王" in got[0]["json"]["text"]["content"], got
        sms.mode = "ok"
        time.sleep(2)
        assert not [r for r in sms.accepted() if "紧急呼叫" in r["body"]], sms.records
        st = d.stats()
        assert st["cancelled"] == 2 and st["pending"] == 0, st
        log("2. ack cancelled the pending SMS escalation; the ack went to WeCom")

        # 3. receiver 503 then down, back after ~5 s: delivered exactly once
        wecom.mode = "503"
        raised_c = int(time.time() * 1000)
        d.event(**alarm("wander:tag-7", raised_ms=raised_c, kind="wander", title="走失"))
        d.wait_result(lambda r: r["alarm_id"] == "wander:tag-7" and r["detail"] == "HTTP 503", 10)
        time.sleep(1.5)
        wecom.down()
        d.wait_result(lambda r: r["alarm_id"] == "wander:tag-7" and not r["ok"]
                      and r["detail"] != "HTTP 503", 10)
        time.sleep(3.5)
        wecom.mode = "ok"
        wecom.up()
        got = wecom.wait_count(1, 10, lambda r: "走失" in r["json"]["text"]["content"])
        time.sleep(2.5)
        got = [r for r in wecom.accepted() if "走失" in r["json"]["text"]["content"]]
        assert len(got) == 1, got
        fin = d.wait_result(lambda r: r["alarm_id"] == "wander:tag-7" and r["final"], 5)
        assert fin["ok"] and fin["attempts"] >= 3 and fin["recipient"] == "值班护理员群", fin
        log(f"3. WeCom down ~5 s got its message once after it returned ({fin['attempts']} tries)")

        # 4. restart with a delivery pending in state_dir
        ding.down()
        raised_d = int(time.time() * 1000)
        d.event(**alarm("hr:band-3", "escalate", 2, raised_ms=raised_d, kind="hr",
                        title="心率异常"))
        d.wait_result(lambda r: r["alarm_id"] == "hr:band-3" and r["channel"] == "manager-ding"
                      and not r["ok"], 10)
        feishu.wait_count(1, 10, lambda r: "hr:band-3" in r["body"] or "心率异常" in r["body"])
        d.close()
        pending = os.listdir(os.path.join(state, "pending"))
        assert len(pending) == 1, pending
        ding.up()
        d = Driver(config, state)
        got = ding.wait_count(1, 10, lambda r: "心率异常" in r["json"]["text"]["content"])
        d.event(**alarm("hr:band-3", "escalate", 2, raised_ms=raised_d, kind="hr",
                        title="心率异常"))
        time.sleep(1.5)
        st = d.stats()
        assert st["deduped"] == 2 and st["pending"] == 0, st  # DingTalk's and Feishu's keys
        d.close()
        d = Driver(config, state)
        time.sleep(1.5)
        st = d.stats()
        assert st["queued"] == 0 and st["sent"] == 0, st
        got = [r for r in ding.accepted() if "心率异常" in r["json"]["text"]["content"]]
        assert len(got) == 1, got
        assert not os.listdir(os.path.join(state, "pending"))
        d.close()
        log("4. the pending DingTalk delivery went out once after the restart")
        log("notify_delivery: all passed")
    finally:
        if d and d.p.poll() is None:
            d.p.kill()
            d.p.wait(5)
        for r in receivers:
            r.stop()


if __name__ == "__main__":
    main()
