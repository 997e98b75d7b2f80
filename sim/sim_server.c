#include "sim_server.h"

#include "err.h"
#include "log.h"
#include "mbcrc.h"
#include "mqtt_link.h"
#include "sim_frame.h"
#include "sim_home.h"
#include "sim_radar.h"
#include "sim_slave.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <modbus.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS        1024 /* over all TCP endpoints; more are refused */
#define RTU_REOPEN_MS      1000 /* retry period for a lost RTU line */
#define RTU_MIN_SILENCE_MS 50   /* PTYs and socat add jitter well above 3.5 characters */
#define MAX_WAIT_MS        1000 /* the loop looks at the clock at least this often */

struct conn {
    int fd;
    size_t len;
    uint8_t buf[SIM_TCP_MAX_ADU];
    char peer[80];
};

struct endpoint {
    const struct sim_endpoint_conf *conf;
    modbus_t *ctx; /* reply engine; for RTU it also owns the line's fd */
    struct sim_slave *by_unit[256];
    /* TCP */
    int listen_fd;
    struct conn **conns;
    size_t nconns;
    /* RTU */
    struct sim_rtu_framer *framer;
    bool line_open;
    int64_t reopen_at_ms; /* monotonic */
    /* RADAR */
    struct sim_radar *radar;
    int64_t radar_next_ms;  /* monotonic: next report due */
    uint64_t radar_dropped; /* bytes the line would not take */
    /* counters */
    uint64_t accepted, bad_header, unknown_unit, broadcast, send_failed;
};

/* What one pollfd belongs to. */
struct watch {
    struct endpoint *ep;
    struct conn *conn; /* NULL: the listening socket or the RTU line */
};

struct sim_server {
    const struct sim_config *cfg;
    struct sim_server_opts opts;
    struct endpoint *eps;
    struct sim_slave **slaves;
    size_t nclients;
    /* Clocks. The scenario time is (monotonic - start) * speed; values are
     * computed for Unix time start_wall_ms + scenario time. */
    int64_t start_wall_ms, start_mono_ms;
    int64_t mono_ms, at_ms; /* taken once per loop pass */
    size_t next_event;      /* first scenario event not yet logged */
    /* Pulses end without an event of their own: their indices into
     * cfg->events, sorted by end time, and the first whose end is not yet
     * logged. */
    size_t *pulses;
    size_t npulses, next_pulse_end;
    int64_t next_stats_ms; /* monotonic */
    struct pollfd *pfds;
    struct watch *watch;
    size_t pcap;
    /* the home's MQTT devices (sim_home.h); NULL without any */
    struct sim_home *home;
    MQTTAsync mqtt;
    int64_t home_next_ms; /* monotonic */
    uint64_t mqtt_dropped;
};

static void clock_update(struct sim_server *srv)
{
    srv->mono_ms = ch_mono_ms();
    srv->at_ms = (int64_t)((double)(srv->mono_ms - srv->start_mono_ms) * srv->opts.speed);
}

/* Scenario time at which pulse event i of cfg ends. */
static int64_t pulse_end(const struct sim_config *cfg, size_t i)
{
    return cfg->events[i].at_ms + cfg->events[i].set.over_ms;
}

struct sim_server *sim_server_new(const struct sim_config *cfg, const struct sim_server_opts *opts)
{
    struct sim_server *srv = ch_xcalloc(1, sizeof *srv);
    srv->cfg = cfg;
    srv->opts = *opts;
    srv->eps = ch_xcalloc(cfg->nendpoints, sizeof *srv->eps);
    for (size_t i = 0; i < cfg->nendpoints; i++) {
        srv->eps[i].conf = &cfg->endpoints[i];
        srv->eps[i].listen_fd = -1;
    }
    srv->slaves = ch_xcalloc(cfg->nslaves, sizeof *srv->slaves);
    for (size_t i = 0; i < cfg->nslaves; i++) {
        const struct sim_slave_conf *sc = &cfg->slaves[i];
        srv->slaves[i] =
            sim_slave_new(sc->name, sc->unit, sc->model, cfg->seed, cfg->utc_offset_min);
        srv->eps[sc->endpoint].by_unit[sc->unit] = srv->slaves[i];
        if (sc->model->radar)
            srv->eps[sc->endpoint].radar = sim_radar_new(srv->slaves[i]);
    }
    for (size_t i = 0; i < cfg->nevents; i++) { /* sorted by time, as the slaves need */
        const struct sim_event_conf *ev = &cfg->events[i];
        /* the home's targets get theirs in sim_home_new() */
        if (ev->target == SIM_TARGET_SLAVE && ev->kind == SIM_EVENT_FAULT)
            sim_slave_add_fault(srv->slaves[ev->slave], &ev->fault);
        else if (ev->target == SIM_TARGET_SLAVE)
            sim_slave_add_set(srv->slaves[ev->slave], ev->metric, &ev->set);
        if (ev->kind == SIM_EVENT_SET && ev->set.kind == SIM_SET_PULSE) {
            srv->pulses = ch_xrealloc(srv->pulses, (srv->npulses + 1) * sizeof *srv->pulses);
            size_t j = srv->npulses++;
            for (; j > 0 && pulse_end(cfg, srv->pulses[j - 1]) > pulse_end(cfg, i); j--)
                srv->pulses[j] = srv->pulses[j - 1];
            srv->pulses[j] = i;
        }
    }
    if (sim_home_wanted(cfg))
        srv->home = sim_home_new(cfg);
    return srv;
}

/* ---- opening ---------------------------------------------------------- */

static int tcp_listen(struct endpoint *ep)
{
    const struct sim_endpoint_conf *c = ep->conf;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int gai = getaddrinfo(c->host, c->port, &hints, &res);
    if (gai != 0) {
        LOGE("sim", c->id, "cannot resolve %s: %s", c->host, gai_strerror(gai));
        return -EINVAL;
    }
    int err = -EADDRNOTAVAIL;
    /* IPv4 first: "localhost" then means 127.0.0.1, where clients look. */
    for (int pass = 0; pass < 2 && ep->listen_fd < 0; pass++) {
        for (struct addrinfo *ai = res; ai && ep->listen_fd < 0; ai = ai->ai_next) {
            if ((ai->ai_family == AF_INET) != (pass == 0))
                continue;
            int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            int one = 1;
            if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                err = -errno;
                if (fd >= 0)
                    close(fd);
                continue;
            }
            ep->listen_fd = fd;
        }
    }
    freeaddrinfo(res);
    if (ep->listen_fd < 0) {
        LOGE("sim", c->id, "cannot listen on %s:%s: %s", c->host, c->port, strerror(-err));
        return err;
    }
    ep->ctx = modbus_new_tcp(NULL, 0); /* never connected: modbus_reply sends on the client fd */
    if (!ep->ctx) {
        LOGE("sim", c->id, "cannot create a libmodbus context: %s", modbus_strerror(errno));
        return -ENOMEM;
    }
    LOGI("sim", c->id, "listening on %s:%s (Modbus TCP)", c->host, c->port);
    return 0;
}

/* Opens (or reopens) the RTU line; libmodbus sets up termios. */
static int rtu_open(struct endpoint *ep)
{
    if (modbus_connect(ep->ctx) < 0) {
        int err = errno;
        ep->reopen_at_ms = ch_mono_ms() + RTU_REOPEN_MS;
        return -err;
    }
    ep->line_open = true;
    return 0;
}

static int rtu_setup(struct endpoint *ep)
{
    const struct sim_endpoint_conf *c = ep->conf;
    ep->ctx = modbus_new_rtu(c->path, c->baud, c->parity, c->data_bits, c->stop_bits);
    if (!ep->ctx) {
        LOGE("sim", c->id, "cannot create a libmodbus RTU context for %s: %s", c->path,
             modbus_strerror(errno));
        return -EINVAL;
    }
    /* 3.5 characters of start + data + parity + stop bits */
    int bits = 1 + c->data_bits + (c->parity != 'N') + c->stop_bits;
    int64_t silence = (int64_t)(3.5 * bits * 1000.0 / c->baud) + 1;
    ep->framer = sim_rtu_framer_new(silence > RTU_MIN_SILENCE_MS ? silence : RTU_MIN_SILENCE_MS);
    int rc = rtu_open(ep);
    if (rc < 0) {
        LOGE("sim", c->id, "cannot open RTU line %s: %s (for a simulated bus, start socat first)",
             c->path, strerror(-rc));
        return rc;
    }
    LOGI("sim", c->id, "serving RTU line %s at %d %d%c%d", c->path, c->baud, c->data_bits,
         c->parity, c->stop_bits);
    return 0;
}

/* A radar line: libmodbus only opens and configures the port. */
static int radar_setup(struct endpoint *ep)
{
    const struct sim_endpoint_conf *c = ep->conf;
    if (!ep->radar) {
        LOGE("sim", c->id, "radar line %s has no radar (add a slave with a radar model)", c->path);
        return -EINVAL;
    }
    ep->ctx = modbus_new_rtu(c->path, c->baud, c->parity, c->data_bits, c->stop_bits);
    if (!ep->ctx) {
        LOGE("sim", c->id, "cannot set up radar line %s: %s", c->path, modbus_strerror(errno));
        return -EINVAL;
    }
    int rc = rtu_open(ep);
    if (rc < 0) {
        LOGE("sim", c->id,
             "cannot open radar line %s: %s (for a simulated line, start socat first)", c->path,
             strerror(-rc));
        return rc;
    }
    LOGI("sim", c->id, "radar streaming on %s at %d %d%c%d", c->path, c->baud, c->data_bits,
         c->parity, c->stop_bits);
    return 0;
}

/* ---- MQTT (the home's devices) ---------------------------------------- */

static int on_mqtt_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    (void)ctx;
    (void)tlen;
    /* subscribes to nothing; Paho wants the callback all the same */
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_mqtt_connected(void *ctx, char *cause)
{
    (void)cause;
    const struct sim_server *srv = ctx;
    LOGI("sim", "mqtt", "connected to %s", srv->cfg->mqtt_broker);
}

static void on_mqtt_lost(void *ctx, char *cause)
{
    const struct sim_server *srv = ctx;
    LOGW("sim", "mqtt", "connection to %s lost%s%s; reconnecting", srv->cfg->mqtt_broker,
         cause ? ": " : "", cause ? cause : "");
}

/* Devices on a LAN publish at QoS 0 and drop what they cannot send: so
 * does the simulator, counting it, rather than queueing a backlog that
 * would arrive stale. */
static void mqtt_publish(void *ctx, const char *topic, const void *payload, size_t len)
{
    struct sim_server *srv = ctx;
    if (!MQTTAsync_isConnected(srv->mqtt)) {
        srv->mqtt_dropped++;
        return;
    }
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)(uintptr_t)payload; /* Paho copies it; its API is not const */
    m.payloadlen = (int)len;
    m.qos = 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (MQTTAsync_sendMessage(srv->mqtt, topic, &m, &ro) != MQTTASYNC_SUCCESS)
        srv->mqtt_dropped++;
}

int sim_server_open(struct sim_server *srv)
{
    if (srv->home) {
        char cid[160];
        snprintf(cid, sizeof cid, "%s-%ld", srv->cfg->mqtt_client_id, (long)getpid());
        struct mqtt_link_cbs cbs = {.ctx = srv,
                                    .on_message = on_mqtt_message,
                                    .on_lost = on_mqtt_lost,
                                    .on_connected = on_mqtt_connected};
        int rc = mqtt_link_open(srv->cfg->mqtt_broker, cid, NULL, NULL, &cbs, &srv->mqtt);
        if (rc != 0) {
            LOGE("sim", "mqtt", "cannot use broker %s: %s", srv->cfg->mqtt_broker, ch_strerror(rc));
            return rc;
        }
        LOGI("sim", "mqtt",
             "%zu wearables, %zu receivers, %zu Wi-Fi beds publishing to %s (connecting)",
             srv->cfg->nwearables, srv->cfg->nreceivers, srv->cfg->nwifi_beds,
             srv->cfg->mqtt_broker);
    }
    for (size_t i = 0; i < srv->cfg->nendpoints; i++) {
        struct endpoint *ep = &srv->eps[i];
        int rc = ep->conf->transport == SIM_TCP   ? tcp_listen(ep)
                 : ep->conf->transport == SIM_RTU ? rtu_setup(ep)
                                                  : radar_setup(ep);
        if (rc < 0)
            return rc;
    }
    srv->start_wall_ms = ch_now_ms();
    if (srv->cfg->has_start_at) {
        /* the simulated day starts at start_at today, local time: a night
         * scenario plays at night whatever the wall clock says */
        int64_t off_s = (int64_t)srv->cfg->utc_offset_min * 60;
        int64_t local_s = srv->start_wall_ms / 1000 + off_s;
        int64_t day = local_s / 86400;
        srv->start_wall_ms = (day * 86400 + srv->cfg->start_at_s - off_s) * 1000;
    }
    srv->start_mono_ms = ch_mono_ms();
    clock_update(srv);
    srv->next_stats_ms = srv->mono_ms + srv->opts.stats_interval_ms;
    LOGI("sim", NULL, "care-sim ready: %zu endpoints, %zu slaves, %zu scenario events, speed %g",
         srv->cfg->nendpoints, srv->cfg->nslaves, srv->cfg->nevents, srv->opts.speed);
    return 0;
}

/* ---- answering -------------------------------------------------------- */

/* Writes a whole short frame; the socket or line is non-blocking, so a peer
 * that stopped reading makes this fail rather than stall the loop. */
static int send_all(int fd, const uint8_t *p, size_t n, bool tcp)
{
    ssize_t w = tcp ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
    if (w < 0)
        return -errno;
    return (size_t)w == n ? 0 : -EAGAIN;
}

/* A corrupt answer for the garbage fault. RTU: a reply of the right shape
 * and length whose CRC is wrong. TCP: a reply with a valid MBAP header whose
 * PDU says it carries 0 bytes, which no request asked for. */
static int send_garbage(struct endpoint *ep, struct conn *c, const uint8_t *adu, size_t len)
{
    uint8_t out[SIM_RTU_MAX_ADU];
    size_t k = 0;
    if (c) {
        uint8_t tcp[] = {adu[0], adu[1], 0, 0, 0, 3, adu[6], adu[7], 0};
        return send_all(c->fd, tcp, sizeof tcp, true);
    }
    unsigned fc = adu[1];
    out[k++] = adu[0];
    out[k++] = adu[1];
    size_t data = 4; /* write replies echo address and quantity */
    if (fc >= 0x01 && fc <= 0x04 && len == 8) {
        unsigned qty = (unsigned)adu[4] << 8 | adu[5];
        data = fc <= 0x02 ? (qty + 7) / 8 : 2u * qty;
        if (data > 250)
            data = 250;
        out[k++] = (uint8_t)data;
    }
    for (size_t i = 0; i < data; i++)
        out[k++] = (uint8_t)(0xA5 ^ (i * 37));
    uint16_t crc = mb_crc16(out, k) ^ 0xFFFF; /* deliberately wrong */
    out[k++] = (uint8_t)(crc & 0xFF);
    out[k++] = (uint8_t)(crc >> 8);
    return send_all(modbus_get_socket(ep->ctx), out, k, false);
}

/* Answers one framed request: adu is a whole RTU frame (CRC included) when
 * c is NULL, else a whole TCP frame from client c. Returns 0, or a negative
 * error when the answer could not be sent. */
static int dispatch(struct sim_server *srv, struct endpoint *ep, struct conn *c, const uint8_t *adu,
                    size_t len)
{
    size_t hdr = c ? 7 : 1;
    uint8_t unit = adu[hdr - 1];
    const uint8_t *pdu = adu + hdr;
    size_t n = len - hdr - (c ? 0 : 2);
    if (!c && unit == 0) {
        ep->broadcast++; /* broadcasts are not simulated: no slave acts on them */
        return 0;
    }
    struct sim_slave *s = ep->by_unit[unit];
    if (c)
        modbus_set_socket(ep->ctx, c->fd);
    if (!s) {
        ep->unknown_unit++;
        LOGD("sim", ep->conf->id, "request for unit %u, which is not simulated here", unit);
        if (!c)
            return 0; /* nobody on the bus answers */
        return modbus_reply_exception(ep->ctx, adu, MODBUS_EXCEPTION_GATEWAY_TARGET) < 0 ? -errno
                                                                                         : 0;
    }
    uint8_t code = 0;
    int rc = 0;
    switch (sim_slave_answer(s, pdu, n, srv->start_wall_ms, srv->at_ms, &code)) {
    case SIM_ANSWER_REPLY:
        rc = modbus_reply(ep->ctx, adu, (int)len, sim_slave_mapping(s)) < 0 ? -errno : 0;
        break;
    case SIM_ANSWER_EXCEPTION:
        rc = modbus_reply_exception(ep->ctx, adu, code) < 0 ? -errno : 0;
        break;
    case SIM_ANSWER_SILENT:
        break;
    case SIM_ANSWER_GARBAGE:
        rc = send_garbage(ep, c, adu, len);
        break;
    }
    if (rc < 0) {
        ep->send_failed++;
        LOGW("sim", sim_slave_name(s), "cannot send the answer%s%s: %s", c ? " to " : "",
             c ? c->peer : "", modbus_strerror(-rc));
    }
    return rc;
}

/* ---- TCP clients ------------------------------------------------------ */

static void conn_close(struct sim_server *srv, struct endpoint *ep, size_t i, const char *why)
{
    struct conn *c = ep->conns[i];
    LOGI("sim", ep->conf->id, "client %s %s", c->peer, why);
    close(c->fd);
    free(c);
    ep->conns[i] = ep->conns[--ep->nconns];
    srv->nclients--;
}

static void tcp_accept(struct sim_server *srv, struct endpoint *ep)
{
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    int fd = accept4(ep->listen_fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            LOGW("sim", ep->conf->id, "accept failed: %s", strerror(errno));
        return;
    }
    char host[64] = "?", port[16] = "?";
    getnameinfo((struct sockaddr *)&sa, salen, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
    if (srv->nclients >= MAX_CLIENTS) {
        LOGW("sim", ep->conf->id, "refusing client %s:%s: already %d clients", host, port,
             MAX_CLIENTS);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = ch_xcalloc(1, sizeof *c);
    c->fd = fd;
    snprintf(c->peer, sizeof c->peer, "%s:%s", host, port);
    ep->conns = ch_xrealloc(ep->conns, (ep->nconns + 1) * sizeof *ep->conns);
    ep->conns[ep->nconns++] = c;
    srv->nclients++;
    ep->accepted++;
    LOGI("sim", ep->conf->id, "client %s connected", c->peer);
}

/* Reads from client c and answers every whole frame. Returns false when the
 * client is gone or has to go (the caller closes it), with *why set. */
static bool tcp_serve(struct sim_server *srv, struct endpoint *ep, struct conn *c, const char **why)
{
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r == 0) {
        *why = "disconnected";
        return false;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return true;
        *why = "lost (receive failed)";
        LOGW("sim", ep->conf->id, "client %s: %s", c->peer, strerror(errno));
        return false;
    }
    c->len += (size_t)r;
    for (;;) {
        int want = sim_frame_mbap_len(c->buf, c->len);
        if (want < 0) {
            ep->bad_header++;
            LOGW("sim", ep->conf->id,
                 "client %s sent a bad MBAP header (protocol id %u, length %u); closing it",
                 c->peer, (unsigned)c->buf[2] << 8 | c->buf[3],
                 (unsigned)c->buf[4] << 8 | c->buf[5]);
            *why = "closed after a bad header";
            return false;
        }
        if (want == 0 || c->len < (size_t)want)
            return true;
        if (dispatch(srv, ep, c, c->buf, (size_t)want) < 0) {
            *why = "closed: the answer could not be sent";
            return false;
        }
        memmove(c->buf, c->buf + want, c->len - (size_t)want);
        c->len -= (size_t)want;
    }
}

/* ---- RTU line --------------------------------------------------------- */

static void rtu_drain(struct sim_server *srv, struct endpoint *ep)
{
    uint8_t frame[SIM_RTU_MAX_ADU];
    size_t n;
    while ((n = sim_rtu_framer_next(ep->framer, frame, srv->mono_ms)) > 0)
        dispatch(srv, ep, NULL, frame, n);
}

static void rtu_lost(struct endpoint *ep, const char *why)
{
    LOGE("sim", ep->conf->id, "RTU line %s lost (%s); reopening every %d ms", ep->conf->path, why,
         RTU_REOPEN_MS);
    modbus_close(ep->ctx);
    ep->line_open = false;
    ep->reopen_at_ms = ch_mono_ms() + RTU_REOPEN_MS;
}

static void rtu_serve(struct sim_server *srv, struct endpoint *ep, short revents)
{
    /* Bytes left from before a silence are judged before new ones join them. */
    rtu_drain(srv, ep);
    uint8_t buf[SIM_RTU_MAX_ADU * 2];
    size_t room = sim_rtu_framer_space(ep->framer);
    ssize_t r = read(modbus_get_socket(ep->ctx), buf, room < sizeof buf ? room : sizeof buf);
    if (r > 0) {
        sim_rtu_framer_feed(ep->framer, buf, (size_t)r, srv->mono_ms);
        rtu_drain(srv, ep);
    } else if (r == 0) {
        rtu_lost(ep, "end of file");
    } else if (errno != EAGAIN && errno != EINTR) {
        rtu_lost(ep, strerror(errno));
    } else if (revents & (POLLHUP | POLLERR)) {
        rtu_lost(ep, "hang-up");
    }
}

/* ---- radar line ------------------------------------------------------ */

/* Sends what the radar has due (reports, answers); a line that is backed up
 * drops the bytes, as a real radar's UART would. */
static void radar_flush(struct sim_server *srv, struct endpoint *ep)
{
    uint8_t out[2048];
    size_t n = sim_radar_output(ep->radar, srv->mono_ms, srv->start_wall_ms, srv->at_ms, out,
                                sizeof out, &ep->radar_next_ms);
    if (n == 0)
        return;
    ssize_t w = write(modbus_get_socket(ep->ctx), out, n);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        rtu_lost(ep, strerror(errno));
        return;
    }
    if (w < (ssize_t)n)
        ep->radar_dropped += n - (size_t)(w > 0 ? w : 0);
}

static void radar_serve(struct sim_server *srv, struct endpoint *ep, short revents)
{
    uint8_t buf[512];
    ssize_t r = read(modbus_get_socket(ep->ctx), buf, sizeof buf);
    if (r > 0) {
        sim_radar_input(ep->radar, buf, (size_t)r, srv->start_wall_ms, srv->at_ms);
        radar_flush(srv, ep); /* answers go out at once */
    } else if (r == 0) {
        rtu_lost(ep, "end of file");
    } else if (errno != EAGAIN && errno != EINTR) {
        rtu_lost(ep, strerror(errno));
    } else if (revents & (POLLHUP | POLLERR)) {
        rtu_lost(ep, "hang-up");
    }
}

static void rtu_retry(struct sim_server *srv, struct endpoint *ep)
{
    if (ep->line_open || srv->mono_ms < ep->reopen_at_ms)
        return;
    if (rtu_open(ep) == 0)
        LOGI("sim", ep->conf->id, "RTU line %s reopened", ep->conf->path);
}

/* ---- loop ------------------------------------------------------------- */

/* The name an event's target goes by in logs, and the metric it sets. */
static const char *event_name(const struct sim_server *srv, const struct sim_event_conf *ev)
{
    const struct sim_config *c = srv->cfg;
    switch (ev->target) {
    case SIM_TARGET_WEARABLE:
        return c->wearables[ev->slave].resident;
    case SIM_TARGET_RECEIVER:
        return c->receivers[ev->slave].id;
    case SIM_TARGET_WIFI_BED:
        return c->wifi_beds[ev->slave].name;
    default:
        return sim_slave_name(srv->slaves[ev->slave]);
    }
}

static const struct sim_metric *event_metric(const struct sim_server *srv,
                                             const struct sim_event_conf *ev)
{
    if (ev->target == SIM_TARGET_WEARABLE)
        return sim_wearable_metrics[ev->metric];
    if (ev->target == SIM_TARGET_WIFI_BED)
        return sim_model_find("bed-mb")->metrics[ev->metric];
    return sim_slave_model(srv->slaves[ev->slave])->metrics[ev->metric];
}

static void log_event(const struct sim_server *srv, const struct sim_event_conf *ev)
{
    const char *name = event_name(srv, ev);
    double at_s = (double)ev->at_ms / 1000.0;
    if (ev->kind == SIM_EVENT_WALK) {
        if (ev->walk.release)
            LOGI("sim", name, "scenario %gs: back to the daily routine", at_s);
        else
            LOGI("sim", name, "scenario %gs: walks to %s over %gs", at_s,
                 srv->cfg->zones[ev->walk.to].id, (double)ev->walk.over_ms / 1000.0);
        return;
    }
    if (ev->kind == SIM_EVENT_FAULT) {
        if (ev->fault.fault == SIM_FAULT_EXCEPTION)
            LOGI("sim", name, "scenario %gs: fault exception (code %u)", at_s,
                 ev->fault.exception_code);
        else
            LOGI("sim", name, "scenario %gs: fault %s", at_s,
                 cfg_enum_name(sim_fault_names, (int)ev->fault.fault));
        return;
    }
    const struct sim_metric *m = event_metric(srv, ev);
    const char *sp = m->unit[0] ? " " : ""; /* contacts and flags have no unit */
    switch (ev->set.kind) {
    case SIM_SET_VALUE:
        LOGI("sim", name, "scenario %gs: %s held at %g%s%s", at_s, m->name, ev->set.value, sp,
             m->unit);
        break;
    case SIM_SET_RAMP:
        LOGI("sim", name, "scenario %gs: %s ramps to %g%s%s over %gs", at_s, m->name, ev->set.value,
             sp, m->unit, (double)ev->set.over_ms / 1000.0);
        break;
    case SIM_SET_RELEASE:
        LOGI("sim", name, "scenario %gs: %s back on its simulated curve", at_s, m->name);
        break;
    case SIM_SET_PULSE:
        LOGI("sim", name, "scenario %gs: %s pulsed to %g%s%s for %gs", at_s, m->name, ev->set.value,
             sp, m->unit, (double)ev->set.over_ms / 1000.0);
        break;
    }
}

/* ", coil writes W, coil changes C, coils on: 0 2" (or "none") for the
 * statistics line of a slave with coils. */
static void coils_summary(const struct sim_slave *s, char *buf, size_t n)
{
    const struct sim_slave_stats *st = sim_slave_stats(s);
    const struct sim_model *m = sim_slave_model(s);
    size_t off =
        (size_t)snprintf(buf, n, ", coil writes %llu, coil changes %llu, coils on:",
                         (unsigned long long)st->coil_writes, (unsigned long long)st->coil_changes);
    bool any = false;
    for (size_t k = 0; k < m->nregs && off < n; k++) {
        const struct sim_reg *r = &m->regs[k];
        if (r->table == SIM_COIL && sim_slave_coil(s, r->addr)) {
            off += (size_t)snprintf(buf + off, n - off, " %u", r->addr);
            any = true;
        }
    }
    if (!any && off < n)
        snprintf(buf + off, n - off, " none");
}

void sim_server_log_stats(const struct sim_server *srv)
{
    if (srv->home) {
        const struct sim_home_stats *st = sim_home_stats(srv->home);
        LOGI("sim", "mqtt",
             "stats: %s, %llu advertisements, %llu receptions, %llu messages (%llu from Wi-Fi "
             "beds), %llu dropped while disconnected",
             srv->mqtt && MQTTAsync_isConnected(srv->mqtt) ? "connected" : "not connected",
             (unsigned long long)st->advs, (unsigned long long)st->heard,
             (unsigned long long)st->messages, (unsigned long long)st->beds,
             (unsigned long long)srv->mqtt_dropped);
    }
    for (size_t i = 0; i < srv->cfg->nendpoints; i++) {
        const struct endpoint *ep = &srv->eps[i];
        if (ep->conf->transport == SIM_TCP) {
            LOGI("sim", ep->conf->id,
                 "stats: %zu clients (%llu accepted), %llu for unknown units, %llu bad headers, "
                 "%llu send failures",
                 ep->nconns, (unsigned long long)ep->accepted, (unsigned long long)ep->unknown_unit,
                 (unsigned long long)ep->bad_header, (unsigned long long)ep->send_failed);
        } else if (ep->conf->transport == SIM_RADAR) {
            const struct sim_radar_stats *st = sim_radar_stats(ep->radar);
            LOGI("sim", ep->conf->id,
                 "stats: radar line %s, %llu frames sent (%llu answers, %llu corrupted, %llu "
                 "noise bytes), %llu frames received, %llu rejected, %llu bytes dropped",
                 ep->line_open ? "open" : "lost", (unsigned long long)st->frames,
                 (unsigned long long)st->answers, (unsigned long long)st->corrupted,
                 (unsigned long long)st->noise, (unsigned long long)st->queries,
                 (unsigned long long)st->bad_input, (unsigned long long)ep->radar_dropped);
        } else {
            const struct sim_rtu_stats *st = sim_rtu_framer_stats(ep->framer);
            LOGI("sim", ep->conf->id,
                 "stats: line %s, %llu frames, %llu bad CRC, %llu bytes dropped, %llu for "
                 "unknown units, %llu broadcasts, %llu send failures",
                 ep->line_open ? "open" : "lost", (unsigned long long)st->frames,
                 (unsigned long long)st->bad_crc, (unsigned long long)st->dropped,
                 (unsigned long long)ep->unknown_unit, (unsigned long long)ep->broadcast,
                 (unsigned long long)ep->send_failed);
        }
    }
    for (size_t i = 0; i < srv->cfg->nslaves; i++) {
        const struct sim_slave *s = srv->slaves[i];
        const struct sim_slave_stats *st = sim_slave_stats(s);
        char coils[160] = "";
        if (sim_model_has_table(sim_slave_model(s), SIM_COIL))
            coils_summary(s, coils, sizeof coils);
        LOGI("sim", sim_slave_name(s),
             "stats: unit %u on %s: served %llu, exceptions %llu, ignored %llu, garbage %llu%s",
             sim_slave_unit(s), srv->cfg->endpoints[srv->cfg->slaves[i].endpoint].id,
             (unsigned long long)st->served, (unsigned long long)st->exceptions,
             (unsigned long long)st->ignored, (unsigned long long)st->garbage, coils);
    }
}

/* Time-driven work; returns how long the loop may wait (ms). */
static int64_t tick(struct sim_server *srv)
{
    int64_t wait = MAX_WAIT_MS;
    const struct sim_config *cfg = srv->cfg;
    while (srv->next_event < cfg->nevents && cfg->events[srv->next_event].at_ms <= srv->at_ms)
        log_event(srv, &cfg->events[srv->next_event++]);
    if (srv->next_event < cfg->nevents) {
        double until = (double)(cfg->events[srv->next_event].at_ms - srv->at_ms) / srv->opts.speed;
        if (until < (double)wait)
            wait = (int64_t)until + 1;
    }
    while (srv->next_pulse_end < srv->npulses &&
           pulse_end(cfg, srv->pulses[srv->next_pulse_end]) <= srv->at_ms) {
        const struct sim_event_conf *ev = &cfg->events[srv->pulses[srv->next_pulse_end++]];
        LOGI("sim", event_name(srv, ev), "scenario %gs: %s pulse over",
             (double)(ev->at_ms + ev->set.over_ms) / 1000.0, event_metric(srv, ev)->name);
    }
    if (srv->next_pulse_end < srv->npulses) {
        int64_t end = pulse_end(cfg, srv->pulses[srv->next_pulse_end]);
        double until = (double)(end - srv->at_ms) / srv->opts.speed;
        if (until < (double)wait)
            wait = (int64_t)until + 1;
    }
    if (srv->opts.stats_interval_ms > 0) {
        if (srv->mono_ms >= srv->next_stats_ms) {
            sim_server_log_stats(srv);
            srv->next_stats_ms = srv->mono_ms + srv->opts.stats_interval_ms;
        }
        if (srv->next_stats_ms - srv->mono_ms < wait)
            wait = srv->next_stats_ms - srv->mono_ms;
    }
    if (srv->home) {
        if (srv->mono_ms >= srv->home_next_ms)
            srv->home_next_ms = sim_home_step(srv->home, srv->mono_ms, srv->start_wall_ms,
                                              srv->at_ms, mqtt_publish, srv);
        if (srv->home_next_ms - srv->mono_ms < wait)
            wait = srv->home_next_ms - srv->mono_ms;
    }
    for (size_t i = 0; i < cfg->nendpoints; i++) {
        struct endpoint *ep = &srv->eps[i];
        if (ep->conf->transport == SIM_TCP)
            continue;
        rtu_retry(srv, ep);
        if (ep->conf->transport == SIM_RADAR) {
            if (ep->line_open) {
                radar_flush(srv, ep);
                if (ep->radar_next_ms - srv->mono_ms < wait)
                    wait = ep->radar_next_ms - srv->mono_ms;
            } else if (ep->reopen_at_ms - srv->mono_ms < wait) {
                wait = ep->reopen_at_ms - srv->mono_ms;
            }
            continue;
        }
        if (!ep->line_open) {
            if (ep->reopen_at_ms - srv->mono_ms < wait)
                wait = ep->reopen_at_ms - srv->mono_ms;
            continue;
        }
        rtu_drain(srv, ep); /* silence may have passed */
        int64_t deadline = sim_rtu_framer_deadline(ep->framer);
        if (deadline >= 0 && deadline - srv->mono_ms < wait)
            wait = deadline - srv->mono_ms;
    }
    return wait < 0 ? 0 : wait;
}

static void watch_add(struct sim_server *srv, size_t *n, int fd, struct endpoint *ep,
                      struct conn *c)
{
    if (*n == srv->pcap) {
        srv->pcap = srv->pcap ? srv->pcap * 2 : 16;
        srv->pfds = ch_xrealloc(srv->pfds, srv->pcap * sizeof *srv->pfds);
        srv->watch = ch_xrealloc(srv->watch, srv->pcap * sizeof *srv->watch);
    }
    srv->pfds[*n] = (struct pollfd){.fd = fd, .events = POLLIN};
    srv->watch[*n] = (struct watch){ep, c};
    (*n)++;
}

static size_t conn_index(const struct endpoint *ep, const struct conn *c)
{
    size_t i = 0;
    while (ep->conns[i] != c)
        i++;
    return i;
}

int sim_server_run(struct sim_server *srv, const sigset_t *wait_mask,
                   const volatile sig_atomic_t *stop)
{
    while (!*stop) {
        clock_update(srv);
        int64_t wait = tick(srv);

        size_t n = 0;
        for (size_t i = 0; i < srv->cfg->nendpoints; i++) {
            struct endpoint *ep = &srv->eps[i];
            if (ep->conf->transport == SIM_TCP) {
                watch_add(srv, &n, ep->listen_fd, ep, NULL);
                for (size_t k = 0; k < ep->nconns; k++)
                    watch_add(srv, &n, ep->conns[k]->fd, ep, ep->conns[k]);
            } else if (ep->line_open) {
                watch_add(srv, &n, modbus_get_socket(ep->ctx), ep, NULL);
            }
        }
        double speed; /* on the simulation clock (util.h), waits are shorter */
        int64_t wait_ns = wait * 1000000;
        if (ch_sim_clock(&speed))
            wait_ns = (int64_t)ceil((double)wait_ns / speed);
        struct timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
        int ready = ppoll(srv->pfds, n, &ts, wait_mask);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            LOGE("sim", NULL, "poll failed: %s", strerror(err));
            return -err;
        }
        clock_update(srv);
        for (size_t i = 0; i < n && ready > 0; i++) {
            short rev = srv->pfds[i].revents;
            if (!rev)
                continue;
            ready--;
            struct endpoint *ep = srv->watch[i].ep;
            struct conn *c = srv->watch[i].conn;
            const char *why = NULL;
            if (c) {
                if (!tcp_serve(srv, ep, c, &why))
                    conn_close(srv, ep, conn_index(ep, c), why);
            } else if (ep->conf->transport == SIM_TCP) {
                tcp_accept(srv, ep);
            } else if (ep->conf->transport == SIM_RADAR) {
                radar_serve(srv, ep, rev);
            } else {
                rtu_serve(srv, ep, rev);
            }
        }
    }
    LOGI("sim", NULL, "stopping");
    return 0;
}

void sim_server_free(struct sim_server *srv)
{
    if (!srv)
        return;
    for (size_t i = 0; i < srv->cfg->nendpoints; i++) {
        struct endpoint *ep = &srv->eps[i];
        while (ep->nconns)
            conn_close(srv, ep, ep->nconns - 1, "closed (shutting down)");
        free(ep->conns);
        if (ep->listen_fd >= 0)
            close(ep->listen_fd);
        if (ep->ctx) {
            if (ep->conf->transport != SIM_TCP && ep->line_open)
                modbus_close(ep->ctx);
            modbus_free(ep->ctx);
        }
        sim_rtu_framer_free(ep->framer);
        sim_radar_free(ep->radar);
    }
    for (size_t i = 0; i < srv->cfg->nslaves; i++)
        sim_slave_free(srv->slaves[i]);
    mqtt_link_close(&srv->mqtt); /* no callback runs after this */
    sim_home_free(srv->home);
    free(srv->slaves);
    free(srv->pulses);
    free(srv->eps);
    free(srv->pfds);
    free(srv->watch);
    free(srv);
}
