/* The uplink on the spool. See uplink.h for the behaviour; here, how.
 *
 * Records. A reading is one TELEMETRY record: a 2-byte device index (little
 * endian; 0xFFFF for the gateway's own metrics) and the reading's JSON
 * object. An alert is one ALERT record: the whole alert message. The record
 * id is the reading's number, so a telemetry message is a run of records
 * with consecutive ids: "seq" is the first id, the readings array is the
 * records' JSON joined by commas. Nothing is decoded or re-encoded on the
 * way out.
 *
 * The sender thread is the spool's only reader. It keeps three positions:
 * alert_after (last alert handed out), live_after and backlog_after (last
 * telemetry record handed out in each region). live_from splits the
 * telemetry lane: ids below it are backlog (sent historical, rate-limited),
 * ids from it on are live. live_from is set to the spool's next id when the
 * uplink starts and at every reconnect.
 *
 * In flight. Each published message has a ticket (the Paho context) naming
 * its lane and id range. PUBACK: the records are acknowledged in the spool,
 * which moves its durable cursor. A failed send or a lost connection sets
 * `rewind`: the positions go back to the spool's cursor and live_from moves
 * to the current end, so every unacknowledged record is offered again (as
 * backlog). Tickets of an earlier connection still acknowledge their records
 * if a late PUBACK comes; they no longer count against max_inflight.
 *
 * Delivered means stored (delivery: hub, the default). A PUBACK only says
 * the broker has the message; with no subscriber behind it (a hub that has
 * not resubscribed yet, a broker restarted without its sessions) the broker
 * drops it. So a PUBACK frees nothing: the ticket's range goes on the
 * `confirm` queue (in PUBACK order, stamped with the monotonic time), and a
 * record leaves the spool when a hub's ack (carehub/ack/v1/{site}/{gateway}, carehub/ack/1:
 * ranges of numbers it made durable) covers it: spool_ack_range() for each
 * range, from any hub, in any order; the spool's cursor is the highest
 * contiguous number acknowledged. The queue's head is the oldest message the
 * broker took that no ack has covered yet:
 *   - while hubs are acknowledging (an ack within hub_ack_timeout), a head
 *     older than hub_ack_timeout, counted from when the acks (re)started, was
 *     lost behind the broker: `rewind`, so every unacknowledged record is
 *     offered again, as historical. A hub that comes back to a broker that
 *     kept its session first works through its queue: the wait counts from
 *     its first ack, so it gets that long before anything is sent twice.
 *   - with no hub acknowledging at all (hubs down, or an ack path that does
 *     not work), every 10 x hub_ack_timeout: a 4G link is not spent resending
 *     a backlog nobody reads, yet a broken ack path still cannot lose data.
 * Redelivery is harmless: the hub's writes are idempotent.
 *
 * Numbers on the wire. A telemetry message says `oldest`, the oldest reading
 * number still held (the telemetry lane's cursor + 1); an alert gets its
 * record id as `seq` and the alert lane's `oldest`; the birth both. So a hub
 * knows that a number below `oldest` it never received is lost for good.
 *
 * Invariant: a record leaves the spool only through spool_ack_range() when a
 * hub acknowledged it (spool_ack() at the PUBACK with delivery: broker), or
 * through eviction at the spool's bound (counted, and logged with how many of
 * the records had been sent but never acknowledged). */
#include "uplink.h"
#include "err.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REC_READING 1
#define REC_ALERT   2
#define DEV_NONE    0xFFFFu

/* With no hub acknowledging, what the broker took is offered again this many
 * hub_ack_timeouts after its PUBACK. */
#define SILENT_HUB_FACTOR 10
/* Messages the broker took within this of each other share a confirm entry. */
#define CONFIRM_MERGE_MS 1000
/* At shutdown, how long to wait for hubs' acks once everything is sent. */
#define STOP_ACK_WAIT_MS 2500

/* A message the broker took (PUBACK) that no hub ack covered yet. */
struct confirm {
    enum spool_lane lane;
    uint64_t first, last; /* spool ids */
    int64_t at;           /* ch_mono_ms() of the PUBACK */
};

struct ticket {
    struct uplink *u;
    enum spool_lane lane;
    uint64_t first, last; /* spool ids */
    size_t n;
    bool historical;
    uint64_t generation; /* connection it was sent on */
    uint16_t *dev;       /* device index per reading (telemetry) */
    struct ticket *prev, *next;
};

struct uplink {
    const struct site_config *cfg;
    struct spool *spool;
    MQTTAsync client;
    char *will_payload;
    char *birth_payload;
    struct ch_status offline; /* the goodbye message, time-stamped when sent */
    char topic_telemetry[256];
    char topic_status[256];
    char topic_alert[256];
    char topic_cmd[256];
    char topic_ack[256];
    edge_cmd_fn on_cmd; /* commands from the hub, or NULL */
    void *cmd_arg;

    const char *const *dev_ids;
    size_t n_dev;
    uint64_t *dev_published;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool thread_started;

    /* sender positions (sender thread only, except rewind) */
    uint64_t alert_after, live_after, backlog_after, live_from;
    double tokens; /* backlog readings that may go now */
    int64_t tokens_at;

    /* delivered means stored: a FIFO of messages awaiting a hub's ack */
    struct confirm *confirm;
    size_t confirm_head, confirm_tail, confirm_cap;
    int64_t last_ack;   /* ch_mono_ms() of the last hub ack, 0: none yet */
    int64_t acks_since; /* ch_mono_ms() the hubs' acks (re)started */
    int64_t idle_since; /* stopping: when the sender last found nothing to send, 0: busy */

    struct ticket *tickets; /* every ticket Paho may still call back */
    size_t n_inflight;      /* tickets of this connection */
    uint64_t generation;
    bool rewind;

    bool connected;
    bool connecting;
    bool birth_pending;
    int64_t next_connect_ms;
    unsigned connect_fails;
    bool stopping;
    int64_t stop_deadline;
    bool flag; /* a shutdown step completed */

    struct uplink_stats st;
    uint64_t last_error_log; /* ms of the last spool error line */
};

static void lock(struct uplink *u)
{
    pthread_mutex_lock(&u->lock);
}

static void unlock(struct uplink *u)
{
    pthread_mutex_unlock(&u->lock);
}

static uint64_t spool_next_id(struct uplink *u)
{
    struct spool_stats ss;
    spool_stats(u->spool, &ss);
    return ss.lane[SPOOL_TELEMETRY].next_id;
}

static void ticket_unlink(struct uplink *u, struct ticket *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        u->tickets = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

static void ticket_free(struct ticket *t)
{
    free(t->dev);
    free(t);
}

static bool is_tls(const char *uri)
{
    return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0 ||
           strncmp(uri, "wss://", 6) == 0;
}

/* ---- the confirm queue (u->lock held) ------------------------------------ */

static size_t confirm_len(const struct uplink *u)
{
    return u->confirm_tail - u->confirm_head;
}

/* Adds a message the broker took. Consecutive messages of a lane within a
 * second share one entry (their PUBACK times differ by less than the
 * timeouts' resolution matters): the queue holds at most a few entries a
 * second per lane, and it is emptied by every rewind, which comes at the
 * latest SILENT_HUB_FACTOR hub_ack_timeouts after its head. */
static void confirm_push(struct uplink *u, enum spool_lane lane, uint64_t first, uint64_t last)
{
    int64_t now = ch_mono_ms();
    if (confirm_len(u)) {
        struct confirm *t = &u->confirm[u->confirm_tail - 1];
        if (t->lane == lane && t->last + 1 == first && now - t->at < CONFIRM_MERGE_MS) {
            t->last = last;
            return;
        }
    }
    if (u->confirm_tail == u->confirm_cap) {
        size_t n = confirm_len(u);
        if (u->confirm_head > 0 && n <= u->confirm_cap / 2) { /* slide down */
            memmove(u->confirm, u->confirm + u->confirm_head, n * sizeof *u->confirm);
        } else {
            u->confirm_cap = u->confirm_cap ? 2 * u->confirm_cap : 64;
            struct confirm *c = ch_xmalloc(u->confirm_cap * sizeof *c);
            if (n)
                memcpy(c, u->confirm + u->confirm_head, n * sizeof *c);
            free(u->confirm);
            u->confirm = c;
        }
        u->confirm_head = 0;
        u->confirm_tail = n;
    }
    u->confirm[u->confirm_tail++] = (struct confirm){lane, first, last, now};
}

/* Pops the head entries a hub's ack (or eviction) has covered: the spool's
 * cursor of their lane is at or past their last record. */
static void confirm_prune(struct uplink *u)
{
    struct spool_stats ss;
    spool_stats(u->spool, &ss);
    while (u->confirm_head < u->confirm_tail) {
        const struct confirm *c = &u->confirm[u->confirm_head];
        if (c->last > ss.lane[c->lane].cursor)
            break;
        u->confirm_head++;
    }
    if (u->confirm_head == u->confirm_tail)
        u->confirm_head = u->confirm_tail = 0;
}

/* The oldest reading and alert numbers still held: the lanes' cursors + 1. */
static void oldest_held(struct uplink *u, uint64_t *readings, uint64_t *alerts)
{
    struct spool_stats ss;
    spool_stats(u->spool, &ss);
    *readings = ss.lane[SPOOL_TELEMETRY].cursor + 1;
    *alerts = ss.lane[SPOOL_ALERT].cursor + 1;
}

/* ---- Paho callbacks (Paho's thread) ------------------------------------- */

static void on_send_success(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    struct ticket *t = ctx;
    struct uplink *u = t->u;
    /* the broker has it, whichever connection carried it */
    bool hub = u->cfg->uplink.delivery == DELIVERY_HUB;
    if (!hub)
        for (uint64_t id = t->first; id <= t->last; id++)
            spool_ack(u->spool, t->lane, id);
    lock(u);
    if (hub)
        confirm_push(u, t->lane, t->first, t->last);
    ticket_unlink(u, t);
    if (t->generation == u->generation)
        u->n_inflight--;
    if (t->lane == SPOOL_ALERT) {
        u->st.alerts_published++;
    } else {
        u->st.messages_published++;
        u->st.readings_published += t->n;
        if (t->historical)
            u->st.historical_published += t->n;
        for (size_t i = 0; i < t->n; i++)
            if (t->dev[i] < u->n_dev)
                u->dev_published[t->dev[i]]++;
    }
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    ticket_free(t);
}

static void on_send_failure(void *ctx, MQTTAsync_failureData *resp)
{
    struct ticket *t = ctx;
    struct uplink *u = t->u;
    lock(u);
    ticket_unlink(u, t);
    if (t->generation == u->generation) {
        u->n_inflight--;
        u->rewind = true; /* its records are still in the spool: offer them again */
    }
    u->st.publish_failures++;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGW("uplink", NULL, "publish of %s %llu..%llu failed (%d%s%s), will resend",
         spool_lane_name(t->lane), (unsigned long long)t->first, (unsigned long long)t->last,
         resp ? resp->code : 0, resp && resp->message ? ": " : "",
         resp && resp->message ? resp->message : "");
    ticket_free(t);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct uplink *u = ctx;
    lock(u);
    u->connected = false;
    u->connecting = false;
    u->next_connect_ms = ch_mono_ms() + 500; /* the sender reconnects, then backs off */
    size_t n = u->n_inflight;
    u->generation++; /* what is in flight may or may not have arrived */
    u->n_inflight = 0;
    u->rewind = true;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGW("uplink", NULL, "connection lost%s%s; %zu message(s) in flight will be resent",
         cause ? ": " : "", cause ? cause : "", n);
}

static void on_sub_failure(void *ctx, MQTTAsync_failureData *resp)
{
    struct uplink *u = ctx;
    LOGW("uplink", NULL,
         "cannot subscribe to %s and %s (%d): commands and storage acknowledgements from the hub "
         "will not arrive",
         u->topic_cmd, u->topic_ack, resp ? resp->code : 0);
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct uplink *u = ctx;
    lock(u);
    u->connected = true;
    u->connecting = false;
    u->connect_fails = 0;
    u->birth_pending = true;
    u->rewind = true; /* what piled up while away is backlog now */
    u->st.connects++;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGI("uplink", NULL, "connected to %s", u->cfg->uplink.broker);
    char *topics[2];
    int qos[2] = {1, 1}, n = 0;
    if (u->on_cmd)
        topics[n++] = u->topic_cmd;
    if (u->cfg->uplink.delivery == DELIVERY_HUB)
        topics[n++] = u->topic_ack;
    if (n) {
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        ro.onFailure = on_sub_failure;
        ro.context = u;
        MQTTAsync_subscribeMany(u->client, n, topics, qos, &ro);
    }
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp)
{
    struct uplink *u = ctx;
    lock(u);
    u->connecting = false;
    u->connect_fails++;
    int64_t delay = 1000;
    int64_t cap = u->cfg->uplink.reconnect_max_ms;
    for (unsigned i = 1; i < u->connect_fails && delay < cap; i++)
        delay *= 2;
    if (delay > cap)
        delay = cap;
    u->next_connect_ms = ch_mono_ms() + delay;
    unsigned fails = u->connect_fails;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    if (fails == 1 || fails % 10 == 0) {
        int code = resp ? resp->code : MQTTASYNC_FAILURE;
        const char *why = resp && resp->message ? resp->message : MQTTAsync_strerror(code);
        LOGW("uplink", NULL, "cannot connect to %s (%s)%s, retrying in %llds%s",
             u->cfg->uplink.broker, why ? why : "?", fails > 1 ? " again" : "",
             (long long)(delay / 1000),
             is_tls(u->cfg->uplink.broker) && code == MQTTASYNC_FAILURE
                 ? "; if the broker is up, check tls.ca_file and that its certificate names "
                   "this host"
                 : "");
    }
}

/* Completion of the shutdown steps (goodbye, disconnect): sets u->flag. */
static void on_flag_success(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    struct uplink *u = ctx;
    lock(u);
    u->flag = true;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
}

static void on_flag_failure(void *ctx, MQTTAsync_failureData *resp)
{
    (void)resp;
    on_flag_success(ctx, NULL);
}

/* A hub's "stored up to": frees the records it covers. */
static void on_ack(struct uplink *u, const char *payload, size_t len)
{
    struct ch_ack a;
    char err[256];
    if (ch_ack_decode(payload, len, &a, err, sizeof err) != 0 ||
        strcmp(a.site, u->cfg->site) != 0 || strcmp(a.gateway, u->cfg->gateway) != 0) {
        lock(u);
        u->st.acks_rejected++;
        unlock(u);
        LOGW("uplink", NULL, "ack refused: %s", a.site[0] ? "for another gateway" : err);
        return;
    }
    uint64_t readings = 0, alerts = 0, k;
    for (size_t i = 0; i < a.n_readings; i++)
        if (spool_ack_range(u->spool, SPOOL_TELEMETRY, a.readings[i].lo, a.readings[i].hi, &k) == 0)
            readings += k;
    for (size_t i = 0; i < a.n_alerts; i++)
        if (spool_ack_range(u->spool, SPOOL_ALERT, a.alerts[i].lo, a.alerts[i].hi, &k) == 0)
            alerts += k;
    int64_t now = ch_mono_ms();
    lock(u);
    u->st.hub_acks++;
    u->st.hub_acked_readings += readings;
    u->st.hub_acked_alerts += alerts;
    if (!u->last_ack || now - u->last_ack > u->cfg->uplink.hub_ack_timeout_ms) {
        u->acks_since = now;
        LOGI("uplink", NULL, "a hub acknowledges storage%s%s", a.hub[0] ? ": " : "", a.hub);
    }
    u->last_ack = now;
    confirm_prune(u);
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGD("uplink", NULL, "hub %s stored %llu reading(s) and %llu alert(s) more", a.hub,
         (unsigned long long)readings, (unsigned long long)alerts);
}

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *msg)
{
    (void)len;
    struct uplink *u = ctx;
    char site[CH_ID_MAX], gw[CH_ID_MAX];
    const char *kind = NULL;
    if (!ch_topic_parse(topic, site, gw, &kind))
        kind = "";
    if (strcmp(topic, u->topic_ack) == 0 && u->cfg->uplink.delivery == DELIVERY_HUB)
        on_ack(u, msg->payload, (size_t)msg->payloadlen);
    else if (u->on_cmd && strncmp(kind, "cmd/", 4) == 0)
        u->on_cmd(u->cmd_arg, "uplink", NULL, kind + 4, msg->payload, (size_t)msg->payloadlen);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

void uplink_set_command_handler(struct uplink *u, edge_cmd_fn fn, void *arg)
{
    u->on_cmd = fn;
    u->cmd_arg = arg;
}

/* ---- setup -------------------------------------------------------------- */

int uplink_create(const struct site_config *cfg, const struct ch_status *birth,
                  const char *const *device_ids, size_t n, struct spool *spool, struct uplink **out)
{
    struct uplink *u = ch_xcalloc(1, sizeof *u);
    u->cfg = cfg;
    u->spool = spool;
    u->dev_ids = device_ids;
    u->n_dev = n;
    u->dev_published = ch_xcalloc(n, sizeof *u->dev_published);
    pthread_mutex_init(&u->lock, NULL);
    ch_cond_init_monotonic(&u->cond);

    ch_topic(u->topic_telemetry, sizeof u->topic_telemetry, cfg->site, cfg->gateway, "telemetry");
    ch_topic(u->topic_status, sizeof u->topic_status, cfg->site, cfg->gateway, "status");
    ch_topic(u->topic_alert, sizeof u->topic_alert, cfg->site, cfg->gateway, "alert");
    ch_ack_topic(u->topic_ack, sizeof u->topic_ack, cfg->site, cfg->gateway);
    /* a subscription filter: ch_topic() writes topics only, never wildcards */
    ch_topic(u->topic_cmd, sizeof u->topic_cmd - 2, cfg->site, cfg->gateway, "cmd");
    strcat(u->topic_cmd, "/+");
    u->birth_payload = ch_status_encode(birth);
    struct ch_status *off = &u->offline;
    ch_strlcpy(off->site, birth->site, sizeof off->site);
    ch_strlcpy(off->gateway, birth->gateway, sizeof off->gateway);
    ch_strlcpy(off->boot_id, birth->boot_id, sizeof off->boot_id);
    u->will_payload = ch_status_encode(off); /* no time: the broker sends it, later */
    ch_strlcpy(off->version, birth->version, sizeof off->version);
    if (!u->birth_payload || !u->will_payload) {
        LOGE("uplink", NULL, "cannot encode the status messages");
        uplink_destroy(u);
        return CH_EINVAL;
    }

    char cid[256];
    if (cfg->uplink.client_id && *cfg->uplink.client_id)
        ch_strlcpy(cid, cfg->uplink.client_id, sizeof cid);
    else
        snprintf(cid, sizeof cid, "carehub-%s-%s", cfg->site, cfg->gateway);
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 0;
    int rc = MQTTAsync_createWithOptions(&u->client, cfg->uplink.broker, cid,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        LOGE("uplink", NULL, "cannot create MQTT client for %s: %s", cfg->uplink.broker,
             MQTTAsync_strerror(rc));
        u->client = NULL;
        uplink_destroy(u);
        return CH_EINVAL;
    }
    MQTTAsync_setCallbacks(u->client, u, on_connection_lost, on_message, NULL);
    MQTTAsync_setConnected(u->client, u, on_connected);
    /* everything the spool holds at start is backlog */
    u->live_from = spool_next_id(u);
    u->live_after = u->live_from - 1;
    *out = u;
    return 0;
}

static void start_connect(struct uplink *u)
{
    const struct uplink_cfg *c = &u->cfg->uplink;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    opts.keepAliveInterval = (int)(c->keepalive_ms / 1000);
    /* carehub resends unacknowledged batches and reconnects itself (with the
     * back-off in on_connect_failure), so Paho keeps no session state and
     * never races us with a reconnect of its own */
    opts.cleansession = 1;
    opts.automaticReconnect = 0;
    opts.connectTimeout = 10;
    opts.maxInflight = (int)c->max_inflight + 4;
    opts.username = c->username;
    opts.password = c->password;
    will.topicName = u->topic_status;
    will.message = u->will_payload;
    will.qos = 1;
    will.retained = 1;
    opts.will = &will;
    if (is_tls(c->broker)) {
        ssl.trustStore = c->tls.ca_file;
        ssl.keyStore = c->tls.cert_file;
        ssl.privateKey = c->tls.key_file;
        ssl.enableServerCertAuth = c->tls.verify;
        ssl.verify = c->tls.verify;
        opts.ssl = &ssl;
    }
    opts.onFailure = on_connect_failure;
    opts.context = u;
    int rc = MQTTAsync_connect(u->client, &opts);
    if (rc != MQTTASYNC_SUCCESS) {
        MQTTAsync_failureData fd = {.code = rc, .message = NULL};
        on_connect_failure(u, &fd);
    }
}

/* Publishes payload (len bytes) on topic; t (may be NULL: fire and forget)
 * is the context of the callbacks. Called unlocked. */
static int send_raw(struct uplink *u, const char *topic, const char *payload, size_t len,
                    bool retained, struct ticket *t)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (t) {
        ro.onSuccess = on_send_success;
        ro.onFailure = on_send_failure;
        ro.context = t;
    }
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)(uintptr_t)payload;
    m.payloadlen = (int)len;
    m.qos = 1;
    m.retained = retained;
    return MQTTAsync_sendMessage(u->client, topic, &m, &ro);
}

/* A growable text buffer for one message. */
struct text {
    char *p;
    size_t len, cap;
};

static void text_put(struct text *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = ch_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Reads up to max consecutive telemetry records after *after and below
 * `below` (0: no limit) into a readings array; fills the ticket's range and
 * device indexes. Returns the number of readings (0: none ready). *oldest_ms
 * gets the append time of the first one. Called unlocked, sender thread. */
static size_t gather(struct uplink *u, uint64_t after, uint64_t below, size_t max, struct text *arr,
                     struct ticket *t, int64_t *oldest_ms)
{
    struct spool_record rec;
    size_t n = 0;
    t->dev = ch_xcalloc(max, sizeof *t->dev);
    text_put(arr, "[", 1);
    while (n < max && spool_next(u->spool, SPOOL_TELEMETRY, after, &rec) == 1) {
        if ((below && rec.id >= below) || (n > 0 && rec.id != t->last + 1))
            break; /* past the region, or a hole (evicted, corrupt): next message */
        after = rec.id;
        if (rec.type != REC_READING || rec.len < 3) {
            LOGW("uplink", NULL, "spool record %llu is not a reading: skipped",
                 (unsigned long long)rec.id);
            spool_ack(u->spool, SPOOL_TELEMETRY, rec.id);
            if (n > 0)
                break;
            continue;
        }
        const unsigned char *d = rec.data;
        if (n == 0) {
            t->first = rec.id;
            *oldest_ms = rec.time_ms;
        } else {
            text_put(arr, ",", 1);
        }
        t->last = rec.id;
        t->dev[n++] = (uint16_t)(d[0] | d[1] << 8);
        text_put(arr, d + 2, rec.len - 2);
    }
    text_put(arr, "]", 1);
    t->n = n;
    return n;
}

static struct ticket *new_ticket(struct uplink *u, enum spool_lane lane)
{
    struct ticket *t = ch_xcalloc(1, sizeof *t);
    t->u = u;
    t->lane = lane;
    return t;
}

/* Registers t as in flight and publishes payload; on a refused send, undoes
 * both and asks for a rewind. Called unlocked. */
static void publish(struct uplink *u, struct ticket *t, const char *topic, const char *payload,
                    size_t len)
{
    lock(u);
    t->generation = u->generation;
    t->next = u->tickets;
    if (u->tickets)
        u->tickets->prev = t;
    u->tickets = t;
    u->n_inflight++;
    unlock(u);
    int rc = send_raw(u, topic, payload, len, false, t);
    if (rc == MQTTASYNC_SUCCESS)
        return;
    /* not queued by Paho: no callback will come for this ticket */
    lock(u);
    ticket_unlink(u, t);
    if (t->generation == u->generation)
        u->n_inflight--;
    u->rewind = true;
    u->st.publish_failures++;
    if (rc == MQTTASYNC_DISCONNECTED)
        u->connected = false;
    unlock(u);
    LOGD("uplink", NULL, "send failed: %s", MQTTAsync_strerror(rc));
    ticket_free(t);
    ch_sleep_real_ms(100); /* Paho refused outright: do not spin on it */
}

/* Sends one alert if there is one; returns true if it did. */
static bool send_alert(struct uplink *u)
{
    struct spool_record rec;
    if (spool_next(u->spool, SPOOL_ALERT, u->alert_after, &rec) != 1)
        return false;
    u->alert_after = rec.id;
    struct ticket *t = new_ticket(u, SPOOL_ALERT);
    t->first = t->last = rec.id;
    t->n = 1;
    uint64_t oldest_r, oldest_a;
    oldest_held(u, &oldest_r, &oldest_a);
    char *msg = ch_alert_numbered(rec.data, rec.len, rec.id, oldest_a);
    if (!msg) {
        LOGE("uplink", NULL, "spool record %llu is not an alert: skipped",
             (unsigned long long)rec.id);
        spool_ack(u->spool, SPOOL_ALERT, rec.id);
        ticket_free(t);
        return true;
    }
    publish(u, t, u->topic_alert, msg, strlen(msg));
    free(msg);
    return true;
}

/* Sends one telemetry message from the live region (historical false) or the
 * backlog (true) if one is due; returns true if it did, else sets *wake_ms
 * (monotonic) to when one may be. */
static bool send_telemetry(struct uplink *u, bool historical, bool stopping, int64_t *wake_ms)
{
    size_t max = (size_t)u->cfg->uplink.batch_max;
    int64_t now = ch_mono_ms();
    if (historical) {
        if (u->backlog_after + 1 >= u->live_from)
            return false;
        if (!stopping) {
            double rate = (double)u->cfg->spool.replay_rate;
            u->tokens += rate * (double)(now - u->tokens_at) / 1000.0;
            u->tokens_at = now;
            double cap = rate > (double)max ? rate : (double)max;
            if (u->tokens > cap)
                u->tokens = cap;
            if (u->tokens < (double)max && u->tokens < rate) {
                int64_t wait = (int64_t)(((double)max - u->tokens) * 1000.0 / rate) + 1;
                *wake_ms = now + (wait < 1000 ? wait : 1000);
                return false;
            }
            if ((double)max > u->tokens)
                max = (size_t)u->tokens;
        }
    }
    struct text arr = {0};
    struct ticket *t = new_ticket(u, SPOOL_TELEMETRY);
    int64_t oldest = 0;
    uint64_t after = historical ? u->backlog_after : u->live_after;
    size_t n = gather(u, after, historical ? u->live_from : 0, max, &arr, t, &oldest);
    /* the batch's age from its first record's append time, a wall-clock
     * label: after a step back of the clock it looks negative, and the batch
     * goes now rather than wait out the step */
    int64_t age = ch_now_ms() - oldest, interval = u->cfg->uplink.batch_interval_ms;
    bool due = n > 0 && (historical || stopping || n >= (size_t)u->cfg->uplink.batch_max ||
                         age < 0 || age >= interval);
    if (!due) {
        if (n > 0)
            *wake_ms = now + (interval - age > 0 ? interval - age : 1);
        free(arr.p);
        ticket_free(t);
        return false;
    }
    if (historical) {
        u->backlog_after = t->last;
        u->tokens -= (double)n;
    } else {
        u->live_after = t->last;
    }
    t->historical = historical;
    uint64_t oldest_r, oldest_a;
    oldest_held(u, &oldest_r, &oldest_a);
    char *msg = ch_telemetry_wrap(u->cfg->site, u->cfg->gateway, t->first, ch_now_ms(), historical,
                                  oldest_r, arr.p, arr.len);
    free(arr.p);
    if (!msg) {
        LOGE("uplink", NULL, "cannot wrap readings %llu..%llu: dropped",
             (unsigned long long)t->first, (unsigned long long)t->last);
        for (uint64_t id = t->first; id <= t->last; id++)
            spool_ack(u->spool, SPOOL_TELEMETRY, id);
        ticket_free(t);
        return true;
    }
    publish(u, t, u->topic_telemetry, msg, strlen(msg));
    free(msg);
    return true;
}

static void wait_until(struct uplink *u, int64_t until)
{
    ch_cond_wait_until(&u->cond, &u->lock, until);
}

/* Waits up to ms for on_flag_* to fire. Called unlocked. */
static void wait_flag(struct uplink *u, int64_t ms)
{
    int64_t until = ch_mono_ms() + ms;
    lock(u);
    while (!u->flag && ch_mono_ms() < until)
        wait_until(u, until);
    unlock(u);
}

static bool nothing_pending(struct uplink *u)
{
    uint64_t a = 0, t = 0;
    spool_pending(u->spool, SPOOL_ALERT, &a, NULL);
    spool_pending(u->spool, SPOOL_TELEMETRY, &t, NULL);
    return a == 0 && t == 0;
}

/* How long the confirm queue's head has waited for a hub's ack, and for how
 * long it may (see the top of the file). Locked; the queue is not empty. */
static int64_t head_waited(const struct uplink *u, int64_t now, int64_t *limit, bool *acking)
{
    int64_t timeout = u->cfg->uplink.hub_ack_timeout_ms;
    const struct confirm *c = &u->confirm[u->confirm_head];
    *acking = u->last_ack && now - u->last_ack <= timeout;
    *limit = *acking ? timeout : SILENT_HUB_FACTOR * timeout;
    return now - (*acking && u->acks_since > c->at ? u->acks_since : c->at);
}

/* Delivered means stored: true if the oldest message the broker took has
 * waited too long for a hub's ack; logs it. Locked. */
static bool hub_ack_overdue(struct uplink *u, int64_t now)
{
    int64_t limit;
    bool acking;
    if (u->cfg->uplink.delivery != DELIVERY_HUB || confirm_len(u) == 0 ||
        head_waited(u, now, &limit, &acking) < limit)
        return false;
    confirm_prune(u); /* an ack or an eviction may have covered it since */
    if (confirm_len(u) == 0 || head_waited(u, now, &limit, &acking) < limit)
        return false;
    const struct confirm *c = &u->confirm[u->confirm_head];
    u->st.redeliveries++;
    LOGW("uplink", NULL,
         "%s %llu..%llu taken by the broker %llds ago %s: sending every unacknowledged record "
         "again",
         spool_lane_name(c->lane), (unsigned long long)c->first, (unsigned long long)c->last,
         (long long)((now - c->at) / 1000),
         acking ? "was not acknowledged by the hubs, which acknowledge others"
                : "still has no hub acknowledgement (no hub acknowledges)");
    return true;
}

/* Stopping: everything is sent (or may not be), nothing is in flight, and
 * what hubs acknowledge has been waited for long enough. Locked. */
static bool stop_done(struct uplink *u, int64_t now)
{
    if (now >= u->stop_deadline || !u->connected)
        return true;
    if (u->n_inflight != 0)
        return false;
    if (nothing_pending(u))
        return true;
    return u->cfg->uplink.delivery == DELIVERY_HUB && u->idle_since &&
           now - u->idle_since >= STOP_ACK_WAIT_MS;
}

static void *sender(void *arg)
{
    struct uplink *u = arg;
    lock(u);
    for (;;) {
        int64_t now = ch_mono_ms();
        if (u->stopping && stop_done(u, now))
            break;
        if (!u->connected) {
            if (!u->connecting && now >= u->next_connect_ms) {
                u->connecting = true;
                unlock(u);
                start_connect(u);
                lock(u);
                continue;
            }
            wait_until(u, u->stopping ? u->stop_deadline : now + 200);
            continue;
        }
        if (u->birth_pending) {
            u->birth_pending = false;
            unlock(u);
            /* with the oldest numbers still held, as they are now */
            uint64_t oldest_r, oldest_a;
            oldest_held(u, &oldest_r, &oldest_a);
            lock(u); /* uplink_set_birth may replace the payload */
            char *birth =
                ch_status_numbered(u->birth_payload, strlen(u->birth_payload), oldest_r, oldest_a);
            if (!birth)
                birth = ch_xstrdup(u->birth_payload);
            unlock(u);
            int rc = send_raw(u, u->topic_status, birth, strlen(birth), true, NULL);
            if (rc != MQTTASYNC_SUCCESS)
                LOGW("uplink", NULL, "cannot publish birth: %s", MQTTAsync_strerror(rc));
            free(birth);
            lock(u);
            continue;
        }
        if (!u->rewind && hub_ack_overdue(u, now))
            u->rewind = true;
        if (u->rewind) {
            /* offer every unacknowledged record again; what is not sent yet
             * is backlog from here on */
            u->rewind = false;
            u->confirm_head = u->confirm_tail = 0; /* they are sent again */
            u->alert_after = 0;
            u->backlog_after = 0;
            u->live_from = spool_next_id(u);
            u->live_after = u->live_from - 1;
            u->tokens_at = now;
        }
        if (u->n_inflight >= (size_t)u->cfg->uplink.max_inflight) {
            wait_until(u, now + 200);
            continue;
        }
        bool stopping = u->stopping;
        unlock(u);
        int64_t wake = now + 200;
        bool sent = send_alert(u) || send_telemetry(u, false, stopping, &wake) ||
                    send_telemetry(u, true, stopping, &wake);
        lock(u);
        if (stopping && !sent && !u->idle_since)
            u->idle_since = ch_mono_ms();
        else if (sent)
            u->idle_since = 0;
        if (!sent && !u->rewind)
            wait_until(u, wake);
    }
    unlock(u);
    return NULL;
}

int uplink_start(struct uplink *u)
{
    u->tokens_at = ch_mono_ms();
    int rc = pthread_create(&u->thread, NULL, sender, u);
    if (rc != 0)
        return -rc;
    u->thread_started = true;
    return 0;
}

static void spool_error(struct uplink *u, int rc, const char *what)
{
    lock(u);
    u->st.spool_errors++;
    uint64_t now = (uint64_t)ch_mono_ms();
    bool say = now - u->last_error_log >= 10000 || u->last_error_log == 0;
    if (say)
        u->last_error_log = now;
    uint64_t n = u->st.spool_errors;
    unlock(u);
    if (say)
        LOGE("uplink", NULL, "cannot spool %s: %s (%llu lost so far)", what, ch_strerror(rc),
             (unsigned long long)n);
}

int uplink_submit(struct uplink *u, const struct ch_reading *r, int dev)
{
    char *json = ch_reading_encode(r);
    if (!json) {
        LOGE("uplink", r->device, "reading of %s violates the contract: dropped", r->measurement);
        spool_error(u, CH_EINVAL, "a reading");
        return CH_EINVAL;
    }
    size_t len = strlen(json);
    unsigned char *rec = ch_xmalloc(len + 2);
    unsigned idx = dev >= 0 && (size_t)dev < u->n_dev ? (unsigned)dev : DEV_NONE;
    rec[0] = (unsigned char)(idx & 0xFF);
    rec[1] = (unsigned char)(idx >> 8);
    memcpy(rec + 2, json, len);
    free(json);
    int rc = spool_append(u->spool, SPOOL_TELEMETRY, REC_READING, rec, len + 2, NULL);
    free(rec);
    if (rc < 0) /* numbered all the same: a gap the hub sees */
        spool_error(u, rc, "a reading");
    return rc;
}

int uplink_alert(struct uplink *u, const char *json, size_t len)
{
    int rc = spool_append(u->spool, SPOOL_ALERT, REC_ALERT, json, len, NULL);
    if (rc < 0)
        spool_error(u, rc, "an alert");
    lock(u);
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    return rc;
}

void uplink_stop(struct uplink *u, int64_t drain_ms)
{
    if (!u->thread_started)
        return;
    lock(u);
    u->stopping = true;
    u->stop_deadline = ch_mono_ms() + drain_ms;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    pthread_join(u->thread, NULL);
    u->thread_started = false;
    spool_sync(u->spool);

    uint64_t left = 0;
    spool_pending(u->spool, SPOOL_TELEMETRY, &left, NULL);
    if (left)
        LOGI("uplink", NULL, "%llu reading(s) stay in the spool for the next start",
             (unsigned long long)left);

    lock(u);
    bool connected = u->connected;
    unlock(u);
    if (connected) {
        /* the will is not sent on a clean disconnect: say goodbye ourselves,
         * and wait (briefly) for the broker to take it */
        u->offline.ts_ms = ch_now_ms();
        char *bye = ch_status_encode(&u->offline);
        lock(u);
        u->flag = false;
        unlock(u);
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        ro.onSuccess = on_flag_success;
        ro.onFailure = on_flag_failure;
        ro.context = u;
        MQTTAsync_message m = MQTTAsync_message_initializer;
        m.payload = bye;
        m.payloadlen = bye ? (int)strlen(bye) : 0;
        m.qos = 1;
        m.retained = 1;
        if (bye && MQTTAsync_sendMessage(u->client, u->topic_status, &m, &ro) == MQTTASYNC_SUCCESS)
            wait_flag(u, 2000);
        free(bye);

        MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
        dopts.timeout = 100;
        dopts.onSuccess = on_flag_success;
        dopts.onFailure = on_flag_failure;
        dopts.context = u;
        lock(u);
        u->flag = false;
        unlock(u);
        if (MQTTAsync_disconnect(u->client, &dopts) == MQTTASYNC_SUCCESS)
            wait_flag(u, 1000);
    }
}

void uplink_destroy(struct uplink *u)
{
    if (!u)
        return;
    if (u->client)
        MQTTAsync_destroy(&u->client);
    /* no callback can run any more */
    while (u->tickets) {
        struct ticket *t = u->tickets;
        ticket_unlink(u, t);
        ticket_free(t);
    }
    free(u->dev_published);
    free(u->confirm);
    free(u->birth_payload);
    free(u->will_payload);
    pthread_mutex_destroy(&u->lock);
    pthread_cond_destroy(&u->cond);
    free(u);
}

void uplink_get_stats(struct uplink *u, struct uplink_stats *out)
{
    struct spool_stats ss;
    spool_stats(u->spool, &ss);
    lock(u);
    *out = u->st;
    out->connected = u->connected;
    unlock(u);
    const struct spool_lane_stats *t = &ss.lane[SPOOL_TELEMETRY];
    out->queued = t->pending_records;
    out->dropped = t->dropped_records;
    out->dropped_sent = t->dropped_sent;
    out->alerts_dropped = ss.lane[SPOOL_ALERT].dropped_records;
    out->alerts_queued = ss.lane[SPOOL_ALERT].pending_records;
    out->alert_seq = ss.lane[SPOOL_ALERT].next_id - 1;
    out->oldest_reading = t->cursor + 1;
    out->seq = t->next_id - 1;
}

void uplink_add_devices(struct uplink *u, size_t n)
{
    lock(u);
    if (n > u->n_dev) {
        u->dev_published = ch_xrealloc(u->dev_published, n * sizeof *u->dev_published);
        memset(u->dev_published + u->n_dev, 0, (n - u->n_dev) * sizeof *u->dev_published);
        u->n_dev = n;
    }
    unlock(u);
}

int uplink_set_birth(struct uplink *u, const struct ch_status *birth)
{
    char *p = ch_status_encode(birth);
    if (!p)
        return CH_EINVAL;
    lock(u);
    free(u->birth_payload);
    u->birth_payload = p;
    if (u->connected)
        u->birth_pending = true;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    return 0;
}

uint64_t uplink_device_published(struct uplink *u, size_t i)
{
    lock(u);
    uint64_t v = i < u->n_dev ? u->dev_published[i] : 0;
    unlock(u);
    return v;
}
