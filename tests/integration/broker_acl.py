"""Identity and ACLs on the brokers, with the SHIPPED configurations
(deploy/mosquitto/*.conf, *.acl; only paths, the listener's port and address,
the log destination and the user are rewritten) and certificates and
passwords made by the SHIPPED tool (deploy/pki/carehub-pki).

Central broker, client certificates (carehub.conf), gateways A (siteA/gw-a)
and B (siteB/gw-b), a hub (hub@hub-t, its ACL block appended by the tool),
subscribed as care-hub does, through $share:
- A publishing on B's telemetry, alert and status (retained) is refused: the
  MQTT 5 PUBACK says "Not authorized", nothing reaches the hub, B's retained
  status is still B's; A's own three topics ARE delivered (positive control);
- A publishing on cmd/ (its own and B's) and on ack is refused;
- A subscribed to B's cmd/# and ack (and to carehub/v1/#) gets nothing while
  the hub commands and acknowledges B, and B gets exactly that; A gets its own;
- a revoked certificate (carehub-pki revoke + SIGHUP) cannot connect any more,
  another gateway still can; no certificate, a certificate of another CA with
  B's identity, and the broker's own certificate (no clientAuth) cannot connect.
Central broker, passwords (carehub-password.conf, users by carehub-pki
passwd): the same ACL file: cross-site and cmd publishes refused, own
delivered, the hub's command reaches B, a wrong password is refused.
Local broker (local.conf, local.acl): app user nurse-1 may publish on
cmd/nurse-1/ack (care-edge's cmd/+/+ gets it) but not on cmd/nurse-2/ack,
cmd/ack or alert.
carehub-pki: refuses ids a/b, a+, #, .., '' (and others), an identity over 64
characters, and re-issuing without --force; keys are 0600.
End to end: care-edge with A's certificate publishes telemetry and its birth
through the central broker; a subscriber with the hub's certificate gets them
and care-hub (hub certificate, shared subscription) stores readings in
InfluxDB; care-edge's local_mqtt reaches the local broker over TLS as user
care-edge with a password_file, and an app reads its retained alarms.
care-edge --check: local_mqtt's tls keys only with ssl://, cert_file with
key_file, readable files, password xor password_file, a username for either.
"""
import os
import shutil
import signal
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Influx, free_port, log, port_open, run_test, wait_for  # noqa: E402

PKI = os.path.join(SRC, "deploy/pki/carehub-pki")
CONF = os.path.join(SRC, "deploy/mosquitto")
A, B = ("siteA", "gw-a"), ("siteB", "gw-b")
DB = "carehub"


def topic(gw, kind):
    return f"carehub/v1/{gw[0]}/{gw[1]}/{kind}"


def ack_topic(gw):
    return f"carehub/ack/v1/{gw[0]}/{gw[1]}"


def pki(*args, check=True):
    r = subprocess.run([PKI, *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"carehub-pki {' '.join(args)} failed: {r.stderr}")
    return r


def shipped(w, name, out, subst):
    """The shipped file with each (old, new) replaced; every old must occur."""
    with open(os.path.join(CONF, name)) as f:
        text = f.read()
    for old, new in subst:
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return w.write(out, text)


class Endpoint:
    """A listener of a broker: where clients connect."""

    def __init__(self, w, port):
        self.w, self.port = w, port


class Broker(Endpoint):
    def __init__(self, w, name, conf, port):
        super().__init__(w, port)
        self.name, self.conf = name, conf
        self.proc = w.spawn(name, ["mosquitto", "-c", conf])
        wait_for(f"{name} to listen", lambda: port_open(port), 10)


class Client:
    """mosquitto_pub/sub arguments for one identity: a certificate pair, or a
    user and password (TLS or not)."""

    def __init__(self, broker, ca=None, cert=None, key=None, user=None, password=None):
        self.broker, self.ca, self.cert, self.key = broker, ca, cert, key
        self.user, self.password = user, password

    def args(self):
        a = ["-h", "127.0.0.1", "-p", str(self.broker.port)]
        if self.ca:
            a += ["--cafile", self.ca]
        if self.cert:
            a += ["--cert", self.cert, "--key", self.key]
        if self.user:
            a += ["-u", self.user, "-P", self.password]
        return a

    def pub(self, t, payload, retain=False):
        """Publishes at QoS 1 with MQTT 5, whose PUBACK carries the broker's
        verdict; returns (exit status, stderr)."""
        argv = ["mosquitto_pub", "-V", "5"] + self.args() + ["-q", "1", "-t", t, "-m", payload]
        if retain:
            argv.append("-r")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=15)
        return r.returncode, r.stderr

    def ok(self, t, payload, retain=False):
        rc, err = self.pub(t, payload, retain)
        assert rc == 0 and "failed" not in err and "rror" not in err, \
            f"publish on {t} should be accepted: rc={rc} {err.strip()}"

    def refused(self, t, payload, retain=False):
        rc, err = self.pub(t, payload, retain)
        assert rc == 0 and "Not authorized" in err, \
            f"publish on {t} should be refused as not authorized: rc={rc} {err.strip()!r}"

    def cannot_connect(self, what):
        rc, err = self.pub(topic(A, "telemetry"), "should-not-connect")
        assert rc != 0, f"{what} connected (rc=0): {err}"
        return err.strip()

    def sub(self, name, *topics):
        argv = ["mosquitto_sub"] + self.args() + ["-q", "1", "-F", "%t\t%p"]
        for t in topics:
            argv += ["-t", t]
        return Sub(self.broker.w.spawn(name, argv, logpath=self.broker.w.path(name + ".capture")))


class Sub:
    def __init__(self, proc):
        self.proc = proc

    def msgs(self):
        out = []
        for line in self.proc.output().splitlines():
            if "\t" in line:
                t, p = line.split("\t", 1)
                out.append((t, p))
        return out

    def payloads(self):
        return [p for _, p in self.msgs()]

    def wait(self, payloads, timeout=10):
        want = set(payloads)
        wait_for(f"{self.proc.name} to receive {sorted(want)}",
                 lambda: want <= set(self.payloads()), timeout)

    def ready(self, publish, tag, timeout=10):
        """Publishes tag-N until the subscriber has one: it is subscribed."""
        n = [0]

        def probe():
            if any(p.startswith(tag) for p in self.payloads()):
                return True
            n[0] += 1
            publish(f"{tag}-{n[0]}")
            return any(p.startswith(tag) for p in self.payloads())
        wait_for(f"{self.proc.name} subscribed", probe, timeout, interval=0.2)


def make_pki(w):
    d = w.path("pki")
    pki("init", d)
    pki("broker", d, "127.0.0.1", "--ip", "127.0.0.1")
    for site, gw in (A, B, ("siteA", "gw-c")):
        pki("gateway", d, site, gw)
    acl = w.path("carehub.acl")
    shutil.copy(os.path.join(CONF, "carehub.acl"), acl)
    r = pki("hub", d, "hub-t", "--acl", acl)
    assert "appended user hub@hub-t" in r.stdout, r.stdout
    with open(acl) as f:
        assert "user hub@hub-t\ntopic read carehub/v1/#\n" in f.read()
    # a second run does not append twice
    assert "already has" in pki("hub-acl", acl, "hub-t").stdout
    return d, acl


def central_broker(w, d, acl, conf="carehub.conf", pwfile=None, name="central"):
    port = free_port()
    subst = [("listener 8883", f"listener {port} 127.0.0.1"),
             ("/etc/mosquitto/carehub/ca.pem", f"{d}/ca.pem"),
             ("/etc/mosquitto/carehub/broker.pem", f"{d}/broker/127.0.0.1.pem"),
             ("/etc/mosquitto/carehub/broker.key", f"{d}/broker/127.0.0.1.key"),
             ("/etc/mosquitto/carehub/carehub.acl", acl),
             ("persistence_location /var/lib/mosquitto/", f"persistence_location {w.dir(name)}/"),
             ("log_dest syslog", "log_dest stderr\nuser root")]
    if pwfile:
        subst.append(("/etc/mosquitto/carehub/carehub.passwd", pwfile))
    else:
        subst.append(("/etc/mosquitto/carehub/crl.pem", f"{d}/crl.pem"))
    path = shipped(w, conf, f"{name}.conf", subst)
    with open(path) as f:
        text = f.read()
    if not pwfile:
        for line in ("require_certificate true", "use_identity_as_username true",
                     "allow_anonymous false", f"crlfile {d}/crl.pem"):
            assert f"\n{line}\n" in text, f"carehub.conf lost '{line}'"
    return Broker(w, name, path, port)


def cert_client(broker, d, who):
    if who == "hub":
        return Client(broker, f"{d}/ca.pem", f"{d}/hubs/hub-t.pem", f"{d}/hubs/hub-t.key")
    site, gw = who
    return Client(broker, f"{d}/ca.pem", f"{d}/gateways/{site}/{gw}.pem",
                  f"{d}/gateways/{site}/{gw}.key")


def check_gateway_acl(w, hub, ga, gb, tag):
    """The ACL seen through any authentication: publish and read rights of
    two gateways and a hub subscribed as care-hub is, through $share."""
    hs = hub.sub(f"{tag}-hub", "$share/carehub/carehub/v1/#")
    hs.ready(lambda p: ga.ok(topic(A, "telemetry"), p), "ready")
    # B's retained status first, so that a forged retained one would replace it
    gb.ok(topic(B, "status"), f"{tag}-b-status", retain=True)
    for kind in ("telemetry", "alert", "status"):
        ga.refused(topic(B, kind), f"{tag}-forged-{kind}", retain=(kind == "status"))
    for t in (topic(A, "cmd/ack"), topic(B, "cmd/out_of_service"), topic(A, "cmd"),
              ack_topic(A), ack_topic(B)):
        ga.refused(t, f"{tag}-gw-cmd")
    for kind in ("telemetry", "alert", "status"):
        ga.ok(topic(A, kind), f"{tag}-own-{kind}")
    # what A sent after the forgeries arrived, so the forgeries would have too
    hs.wait([f"{tag}-own-telemetry", f"{tag}-own-alert", f"{tag}-own-status",
             f"{tag}-b-status"])
    bad = [m for m in hs.msgs() if "forged" in m[1] or "gw-cmd" in m[1]]
    assert not bad, f"the hub received what the broker should have refused: {bad}"
    r = subprocess.run(["mosquitto_sub"] + hub.args() + ["-C", "1", "-W", "5", "-t",
                                                          topic(B, "status"), "-F", "%p"],
                       capture_output=True, text=True, timeout=15)
    assert r.stdout.strip() == f"{tag}-b-status", f"B's retained status is {r.stdout!r}"

    # reading: A on B's commands and acks, and on everything; B on its own
    sa = ga.sub(f"{tag}-gw-a", topic(B, "cmd/#"), ack_topic(B), "carehub/v1/#", "carehub/ack/v1/#",
                topic(A, "cmd/#"), ack_topic(A))
    sb = gb.sub(f"{tag}-gw-b", topic(B, "cmd/#"), ack_topic(B))
    sa.ready(lambda p: hub.ok(topic(A, "cmd/rebirth"), p), "ready-a")
    sb.ready(lambda p: hub.ok(topic(B, "cmd/rebirth"), p), "ready-b")
    hub.ok(topic(B, "cmd/ack"), f"{tag}-cmd-for-b")
    hub.ok(ack_topic(B), f"{tag}-ack-for-b")
    gb.ok(topic(B, "telemetry"), f"{tag}-b-telemetry")
    hub.ok(topic(A, "cmd/ack"), f"{tag}-cmd-for-a")
    hub.ok(ack_topic(A), f"{tag}-ack-for-a")
    sb.wait([f"{tag}-cmd-for-b", f"{tag}-ack-for-b"])
    sa.wait([f"{tag}-cmd-for-a", f"{tag}-ack-for-a"])
    leaked = [m for m in sa.msgs() if "siteB" in m[0]]
    assert not leaked, f"gateway A read site B's topics: {leaked}"
    own = {t for t, _ in sa.msgs()}
    assert own <= {topic(A, "cmd/rebirth"), topic(A, "cmd/ack"), ack_topic(A)}, own
    assert not [m for m in sb.msgs() if "siteA" in m[0]], sb.msgs()
    for s in (hs, sa, sb):
        s.proc.stop()
    log(f"{tag}: cross-site, cmd and ack publishes refused; own topics delivered; "
        f"hub -> B commands and acks reach B only")


def test_pki_tool(w):
    d = w.path("pki-ids")
    pki("init", d)
    for bad in ["a/b", "a+", "#", "..", "", ".x", "-", "a b", "a:b", "hub@x", "é", "a\nb",
                "x" * 65]:
        for args in (["gateway", d, bad, "gw"], ["gateway", d, "site", bad], ["hub", d, bad]):
            r = pki(*args, check=False)
            assert r.returncode != 0, f"carehub-pki {args} accepted {bad!r}"
            assert "carehub id" in r.stderr or "empty" in r.stderr or \
                "unknown option" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(d, "gateways")) and \
        not os.path.exists(os.path.join(d, "hubs")), "a refused id left files behind"
    r = pki("gateway", d, "s" * 32, "g" * 32, check=False)  # 65 characters with the '/'
    assert r.returncode != 0 and "at most 64" in r.stderr, r.stderr
    pki("gateway", d, "s" * 32, "g" * 31)
    r = pki("passwd", w.path("pw"), "local", "a/b", check=False)
    assert r.returncode != 0 and "carehub id" in r.stderr, r.stderr
    r1 = pki("gateway", d, "cq-1", "gw-1")
    key = os.path.join(d, "gateways/cq-1/gw-1.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(d, "private/ca.key")).st_mode) == 0o600
    r = pki("gateway", d, "cq-1", "gw-1", check=False)
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    r2 = pki("gateway", d, "cq-1", "gw-1", "--force")
    old = r1.stdout.split("serial ")[1].split(",")[0]
    assert f"serial {old}, stays valid" in r2.stdout, r2.stdout
    listing = pki("list", d).stdout
    assert listing.count("cq-1/gw-1") == 2 and " valid " in listing, listing
    pki("revoke", d, old)
    assert "revoked   cq-1/gw-1" in pki("list", d).stdout
    r = pki("init", d, check=False)
    assert r.returncode != 0 and "already holds a CA" in r.stderr
    assert pki("expiring", d, "--days", "30", check=False).returncode == 0
    assert pki("expiring", d, "--days", "5000", check=False).returncode == 1
    log("carehub-pki: bad ids refused, 64-character limit, --force rotation, list, revoke")


def test_central_certificates(w, d, acl):
    br = central_broker(w, d, acl)
    hub = cert_client(br, d, "hub")
    ga, gb, gc = (cert_client(br, d, x) for x in (A, B, ("siteA", "gw-c")))
    check_gateway_acl(w, hub, ga, gb, "cert")

    # revocation: C works, is revoked, the broker reloads, C is refused; A is not
    hs = hub.sub("revoke-hub", "carehub/v1/#")
    hs.ready(lambda p: ga.ok(topic(A, "telemetry"), p), "ready")
    gc.ok(topic(("siteA", "gw-c"), "telemetry"), "c-before")
    hs.wait(["c-before"])
    pki("revoke", d, "siteA/gw-c")
    os.kill(br.proc.pid, signal.SIGHUP)
    wait_for("the revoked certificate to be refused",
                   lambda: subprocess.run(["mosquitto_pub"] + gc.args() +
                                          ["-q", "1", "-t", topic(("siteA", "gw-c"), "telemetry"),
                                           "-m", "c-after"], capture_output=True, text=True,
                                          timeout=15).returncode != 0, 10)
    ga.ok(topic(A, "telemetry"), "a-after-revoke")
    hs.wait(["a-after-revoke"])
    assert "c-after" not in hs.payloads()
    assert "certificate verify failed" in br.proc.output() or \
        "certificate revoked" in br.proc.output(), br.proc.tail()

    # no certificate; another CA's certificate naming B; the broker's own
    Client(br, f"{d}/ca.pem").cannot_connect("a client without a certificate")
    other = w.path("pki-other")
    pki("init", other)
    pki("gateway", other, *B)
    Client(br, f"{d}/ca.pem", f"{other}/gateways/siteB/gw-b.pem",
           f"{other}/gateways/siteB/gw-b.key").cannot_connect("a certificate of another CA")
    Client(br, f"{d}/ca.pem", f"{d}/broker/127.0.0.1.pem",
           f"{d}/broker/127.0.0.1.key").cannot_connect("the broker's server certificate")
    hs.proc.stop()
    assert not [p for p in hs.payloads() if p == "should-not-connect"], hs.payloads()
    br.proc.stop()
    log("revoked, missing, foreign-CA and server certificates cannot connect")


def test_central_passwords(w, d, acl):
    pw = w.path("carehub.passwd")
    secrets = {}
    for who, args in (("a", ["gateway", *A]), ("b", ["gateway", *B]), ("hub", ["hub", "hub-t"])):
        secrets[who] = pki("passwd", pw, *args).stdout.strip()
    br = central_broker(w, d, acl, conf="carehub-password.conf", pwfile=pw, name="central-pw")
    ca = f"{d}/ca.pem"
    hub = Client(br, ca, user="hub@hub-t", password=secrets["hub"])
    ga = Client(br, ca, user="siteA/gw-a", password=secrets["a"])
    gb = Client(br, ca, user="siteB/gw-b", password=secrets["b"])
    check_gateway_acl(w, hub, ga, gb, "pw")
    Client(br, ca, user="siteA/gw-a", password="wrong").cannot_connect("a wrong password")
    Client(br, ca).cannot_connect("no username")
    br.proc.stop()


def local_broker(w, d, tls_port=None):
    pw = w.path("local.passwd")
    secrets = {u: pki("passwd", pw, "local", u).stdout.strip()
               for u in ("care-edge", "nurse-1", "nurse-2")}
    port = free_port()
    subst = [("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1"),
             ("/etc/mosquitto/carehub-local/local.passwd", pw),
             ("/etc/mosquitto/carehub-local/local.acl", os.path.join(CONF, "local.acl")),
             ("persistence_location /var/lib/mosquitto/",
              f"persistence_location {w.dir('local')}/"),
             ("log_dest syslog", "log_dest stderr\nuser root")]
    if tls_port:  # the installer's step: uncomment the TLS listener
        subst += [("#listener 8883", f"listener {tls_port} 127.0.0.1"),
                  ("#cafile /etc/mosquitto/carehub-local/ca.pem", f"cafile {d}/ca.pem"),
                  ("#certfile /etc/mosquitto/carehub-local/server.pem",
                   f"certfile {d}/broker/127.0.0.1.pem"),
                  ("#keyfile /etc/mosquitto/carehub-local/server.key",
                   f"keyfile {d}/broker/127.0.0.1.key")]
    br = Broker(w, "local", shipped(w, "local.conf", "local.conf", subst), port)
    if tls_port:
        wait_for("local TLS listener", lambda: port_open(tls_port), 10)
    return br, secrets


def test_local_broker(w, d):
    br, s = local_broker(w, d)
    edge = Client(br, user="care-edge", password=s["care-edge"])
    n1 = Client(br, user="nurse-1", password=s["nurse-1"])
    n2 = Client(br, user="nurse-2", password=s["nurse-2"])
    cmds = edge.sub("local-edge", topic(A, "cmd/+/+"))
    cmds.ready(lambda p: n2.ok(topic(A, "cmd/nurse-2/ack"), p), "ready")
    n1.refused(topic(A, "cmd/nurse-2/ack"), "n1-as-n2")
    n1.refused(topic(A, "cmd/ack"), "n1-no-user")
    n1.refused(topic(A, "cmd/nurse-1/ack/x"), "n1-deeper")
    n1.refused(topic(A, "alert"), "n1-alert")
    n1.ok(topic(A, "cmd/nurse-1/ack"), "n1-own")
    cmds.wait(["n1-own"])
    assert [m for m in cmds.msgs() if m[1].startswith("n1-")] == \
        [(topic(A, "cmd/nurse-1/ack"), "n1-own")], cmds.msgs()
    # care-edge writes the alarms, apps read them
    alerts = n2.sub("local-app", topic(A, "alert"), topic(A, "alarms"))
    alerts.ready(lambda p: edge.ok(topic(A, "alert"), p), "ready")
    edge.ok(topic(A, "alarms"), "snapshot")
    alerts.wait(["snapshot"])
    Client(br, user="nurse-1", password="wrong").cannot_connect("a wrong local password")
    Client(br).cannot_connect("an anonymous local client")
    br.proc.stop()
    log("local broker: commands only as oneself (cmd/USER/ACTION); apps read alert/alarms")


def test_end_to_end(w, d, acl):
    br = central_broker(w, d, acl, name="central-e2e")
    influx = Influx(w)
    tls_port = free_port()
    _, s = local_broker(w, d, tls_port=tls_port)
    modbus_port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 3
endpoints: [{{id: lan, tcp: "127.0.0.1:{modbus_port}"}}]
slaves: [{{name: air, endpoint: lan, unit: 1, model: air-board, count: 1}}]
""")
    w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg]).wait_log("care-sim ready", 10)
    hub_watch = cert_client(br, d, "hub").sub("e2e-hub-watch", topic(A, "telemetry"),
                                               topic(A, "status"))
    hub_cfg = w.write("hub.yaml", f"""
mqtt:
  broker: ssl://127.0.0.1:{br.port}
  client_id: hub-t
  shared_group: carehub
  tls: {{ca_file: "{d}/ca.pem", cert_file: "{d}/hubs/hub-t.pem", key_file: "{d}/hubs/hub-t.key"}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 300ms}}
spool: {{dir: hub-spool}}
self_metrics_interval: 2s
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])
    hub.wait_log(r"subscribed to \$share/carehub/", 10)
    with open(w.path("local-mqtt.pass"), "w") as f:
        f.write(s["care-edge"] + "\n")
    site = w.write("site.yaml", f"""
site: {A[0]}
gateway: {A[1]}
uplink:
  broker: ssl://127.0.0.1:{br.port}
  batch_interval: 200ms
  tls: {{ca_file: "{d}/ca.pem", cert_file: "{d}/gateways/siteA/gw-a.pem",
         key_file: "{d}/gateways/siteA/gw-a.key"}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port}, timeout: 500ms}}
devices:
  - {{id: air-1, bus: lan, slave: 1, profile: air-board, interval: 300ms}}
local_mqtt:
  broker: ssl://127.0.0.1:{tls_port}
  username: care-edge
  password_file: local-mqtt.pass
  tls: {{ca_file: "{d}/ca.pem"}}
self_metrics_interval: 2s
""")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log(f"connected to ssl://127.0.0.1:{br.port}", 15)
    edge.wait_log(rf"\[local-mqtt\] connected to ssl://127.0.0.1:{tls_port}", 15)
    want = {topic(A, "telemetry"), topic(A, "status")}
    wait_for("telemetry and birth at the hub's subscriber",
             lambda: {t for t, _ in hub_watch.msgs()} >= want, 15)

    def stored():
        rows = influx.series('SELECT count("co2") FROM "environment" '
                             'WHERE "gateway" = \'gw-a\'', DB)
        return rows and rows[0].get("count", 0) >= 3
    wait_for("readings of siteA/gw-a in InfluxDB through the hub's certificate", stored, 20)
    app = Client(Endpoint(w, tls_port), f"{d}/ca.pem", user="nurse-1", password=s["nurse-1"])
    r = subprocess.run(["mosquitto_sub"] + app.args() + ["-C", "1", "-W", "5", "-t",
                                                          topic(A, "alarms"), "-F", "%p"],
                       capture_output=True, text=True, timeout=15)
    assert f'"site":"{A[0]}"' in r.stdout and '"alarms":[' in r.stdout, \
        f"the app read {r.stdout!r} {r.stderr!r}"
    log("end to end: care-edge (gateway cert) -> broker -> care-hub (hub cert, $share) -> "
        "InfluxDB; care-edge -> local broker over TLS with a password file")


def test_local_mqtt_check(w, d):
    """care-edge --check on local_mqtt's credentials and TLS keys."""
    base = f"""site: {A[0]}
gateway: {A[1]}
uplink: {{broker: tcp://127.0.0.1:1}}
spool: {{dir: "{w.path('check-spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses: [{{id: lan, type: modbus-tcp, host: 127.0.0.1, port: 1}}]
devices: [{{id: air-1, bus: lan, slave: 1, profile: air-board}}]
"""
    w.write("empty.pass", "\n")
    w.write("check.pass", "s3cret\n")
    cases = [
        ("{broker: ssl://127.0.0.1:1, username: care-edge, password_file: check.pass, "
         f"tls: {{ca_file: {d}/ca.pem, cert_file: {d}/hubs/hub-t.pem, "
         f"key_file: {d}/hubs/hub-t.key}}}}",
         None),
        ("{broker: tcp://127.0.0.1:1, tls: {ca_file: ca.pem}}", "is not ssl:// or mqtts://"),
        (f"{{broker: ssl://127.0.0.1:1, tls: {{cert_file: {d}/hubs/hub-t.pem}}}}",
         "'cert_file' and 'key_file' go together"),
        ("{broker: ssl://127.0.0.1:1, tls: {ca_file: missing.pem}}", "key 'ca_file': cannot read"),
        ("{broker: ssl://127.0.0.1:1, username: u, password: p, password_file: check.pass}",
         "one or the other"),
        ("{broker: ssl://127.0.0.1:1, password: p}", "key 'password' needs 'username'"),
        ("{broker: ssl://127.0.0.1:1, username: u, password_file: missing.pass}",
         "cannot read a password from"),
        ("{broker: ssl://127.0.0.1:1, username: u, password_file: empty.pass}", "empty line"),
    ]
    for i, (lm, err) in enumerate(cases):
        path = w.write(f"check-{i}.yaml", base + f"local_mqtt: {lm}\n")
        r = subprocess.run([w.bin("care-edge"), "-c", path, "--check"], capture_output=True,
                           text=True, timeout=30)
        if err is None:
            assert r.returncode == 0, f"{lm}: {r.stderr}"
        else:
            assert r.returncode == 2 and err in r.stderr, f"{lm}: rc={r.returncode} {r.stderr}"
    log("care-edge --check: local_mqtt TLS and credential keys checked")


def main(w):
    test_pki_tool(w)
    d, acl = make_pki(w)
    test_central_certificates(w, d, acl)
    test_central_passwords(w, d, acl)
    test_local_broker(w, d)
    test_end_to_end(w, d, acl)
    test_local_mqtt_check(w, d)


if __name__ == "__main__":
    run_test(main)
