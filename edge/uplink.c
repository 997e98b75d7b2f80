#include "uplink.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A reading waiting in the queue, with when it arrived (for batch_interval). */
struct qent {
    struct ch_reading r;
    int64_t t_ms; /* monotonic */
    int dev;      /* device index for delivery counts, or -1 */
};

struct batch {
    uint64_t id; /* changes each time the batch is sent */
    uint64_t seq;
    char *payload;
    size_t n_readings;
    int32_t *dev; /* device index per reading, -1 if not counted */
    struct batch *next;
};

/* The context handed to Paho for one send: names the batch by id, so a late
 * callback for a batch that was already re-sent is recognised and ignored. */
struct ticket {
    struct uplink *u;
    uint64_t batch_id;
    struct ticket *prev, *next;
};

struct uplink {
    const struct site_config *cfg;
    MQTTAsync client;
    char *will_payload;
    char *birth_payload;
    struct ch_status offline; /* the goodbye message, time-stamped when sent */
    char topic_telemetry[256];
    char topic_status[256];

    const char *const *dev_ids;
    size_t n_dev;
    uint64_t *dev_published;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool thread_started;

    /* queue: ring buffer that grows up to queue_max */
    struct qent *q;
    size_t q_cap, q_head, q_len;

    struct batch *retry;    /* to send again first, in seq order */
    struct batch *inflight; /* sent, awaiting PUBACK */
    size_t n_inflight;
    struct ticket *tickets;
    uint64_t next_batch_id;

    bool connected;
    bool connecting;
    bool birth_pending;
    int64_t next_connect_ms;
    unsigned connect_fails;
    bool stopping;
    int64_t stop_deadline;
    bool flag; /* a shutdown step completed */

    struct uplink_stats st;
};

static void lock(struct uplink *u)
{
    pthread_mutex_lock(&u->lock);
}

static void unlock(struct uplink *u)
{
    pthread_mutex_unlock(&u->lock);
}

static void batch_free(struct batch *b)
{
    if (!b)
        return;
    free(b->payload);
    free(b->dev);
    free(b);
}

/* Inserts b into the retry list keeping sequence order. Called locked. */
static void retry_insert(struct uplink *u, struct batch *b)
{
    struct batch **pp = &u->retry;
    while (*pp && (*pp)->seq < b->seq)
        pp = &(*pp)->next;
    b->next = *pp;
    *pp = b;
}

/* Unlinks the in-flight batch with this id; NULL if it is not in flight. */
static struct batch *inflight_take(struct uplink *u, uint64_t id)
{
    for (struct batch **pp = &u->inflight; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct batch *b = *pp;
            *pp = b->next;
            b->next = NULL;
            u->n_inflight--;
            return b;
        }
    }
    return NULL;
}

static void ticket_drop(struct uplink *u, struct ticket *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        u->tickets = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

static bool is_tls(const char *uri)
{
    return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0 ||
           strncmp(uri, "wss://", 6) == 0;
}

/* ---- Paho callbacks (Paho's thread) ------------------------------------- */

static void on_send_success(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    struct ticket *t = ctx;
    struct uplink *u = t->u;
    lock(u);
    struct batch *b = inflight_take(u, t->batch_id);
    ticket_drop(u, t);
    if (b) {
        u->st.messages_published++;
        u->st.readings_published += b->n_readings;
        for (size_t i = 0; i < b->n_readings; i++)
            if (b->dev[i] >= 0)
                u->dev_published[b->dev[i]]++;
    }
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    batch_free(b);
}

static void on_send_failure(void *ctx, MQTTAsync_failureData *resp)
{
    struct ticket *t = ctx;
    struct uplink *u = t->u;
    lock(u);
    struct batch *b = inflight_take(u, t->batch_id);
    ticket_drop(u, t);
    if (b) {
        u->st.publish_failures++;
        LOGW("uplink", NULL, "publish of seq %llu failed (%d%s%s), will resend",
             (unsigned long long)b->seq, resp ? resp->code : 0, resp && resp->message ? ": " : "",
             resp && resp->message ? resp->message : "");
        retry_insert(u, b);
    }
    pthread_cond_broadcast(&u->cond);
    unlock(u);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct uplink *u = ctx;
    lock(u);
    u->connected = false;
    u->connecting = false;
    u->next_connect_ms = ch_mono_ms() + 500; /* the sender reconnects, then backs off */
    /* whatever was in flight may or may not have arrived: send it again */
    size_t n = u->n_inflight;
    while (u->inflight) {
        struct batch *b = u->inflight;
        u->inflight = b->next;
        b->next = NULL;
        retry_insert(u, b);
    }
    u->n_inflight = 0;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGW("uplink", NULL, "connection lost%s%s; %zu message(s) in flight will be resent",
         cause ? ": " : "", cause ? cause : "", n);
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
    u->st.connects++;
    pthread_cond_broadcast(&u->cond);
    unlock(u);
    LOGI("uplink", NULL, "connected to %s", u->cfg->uplink.broker);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp)
{
    struct uplink *u = ctx;
    lock(u);
    u->connecting = false;
    u->connect_fails++;
    int64_t delay = 1000;
    for (unsigned i = 1; i < u->connect_fails && delay < 30000; i++)
        delay *= 2;
    if (delay > 30000)
        delay = 30000;
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

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *msg)
{
    (void)ctx;
    (void)len;
    /* commands arrive here in a later step; nothing is subscribed yet */
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

/* ---- setup -------------------------------------------------------------- */

int uplink_create(const struct site_config *cfg, const struct ch_status *birth,
                  const char *const *device_ids, size_t n, struct uplink **out)
{
    struct uplink *u = ch_xcalloc(1, sizeof *u);
    u->cfg = cfg;
    u->dev_ids = device_ids;
    u->n_dev = n;
    u->dev_published = ch_xcalloc(n, sizeof *u->dev_published);
    pthread_mutex_init(&u->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->cond, &ca);
    pthread_condattr_destroy(&ca);

    ch_topic(u->topic_telemetry, sizeof u->topic_telemetry, cfg->site, cfg->gateway, "telemetry");
    ch_topic(u->topic_status, sizeof u->topic_status, cfg->site, cfg->gateway, "status");
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
    u->q_cap = 1024;
    u->q = ch_xcalloc(u->q_cap, sizeof *u->q);
    *out = u;
    return 0;
}

/* Starts one connect attempt. Called unlocked from the sender thread. */
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

/* Publishes payload; returns Paho's result. ticket may be NULL (fire and
 * forget). Called unlocked. */
static int send_raw(struct uplink *u, const char *topic, const char *payload, bool retained,
                    struct ticket *t)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (t) {
        ro.onSuccess = on_send_success;
        ro.onFailure = on_send_failure;
        ro.context = t;
    }
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)(uintptr_t)payload;
    m.payloadlen = (int)strlen(payload);
    m.qos = 1;
    m.retained = retained;
    return MQTTAsync_sendMessage(u->client, topic, &m, &ro);
}

/* Takes up to batch_max readings off the queue and encodes them. Called
 * locked; encoding is cheap next to the network. */
static struct batch *make_batch(struct uplink *u)
{
    size_t n =
        u->q_len < (size_t)u->cfg->uplink.batch_max ? u->q_len : (size_t)u->cfg->uplink.batch_max;
    struct ch_reading *rs = ch_xcalloc(n, sizeof *rs);
    struct batch *b = ch_xcalloc(1, sizeof *b);
    b->dev = ch_xcalloc(n, sizeof *b->dev);
    for (size_t i = 0; i < n; i++) {
        struct qent *e = &u->q[(u->q_head + i) % u->q_cap];
        rs[i] = e->r;
        b->dev[i] = e->dev;
    }
    u->q_head = (u->q_head + n) % u->q_cap;
    u->q_len -= n;
    size_t kept = n;
    char *arr = ch_readings_encode(rs, n);
    if (!arr) {
        /* some reading breaks the contract (a driver bug): drop just those,
         * name them, and send the rest */
        kept = 0;
        for (size_t i = 0; i < n; i++) {
            char *one = ch_readings_encode(&rs[i], 1);
            if (one) {
                free(one);
                rs[kept] = rs[i];
                b->dev[kept++] = b->dev[i];
                continue;
            }
            LOGE("uplink", rs[i].device, "reading of %s violates the contract, dropped",
                 rs[i].measurement);
            free(rs[i].metrics);
            u->st.dropped++;
        }
        arr = kept ? ch_readings_encode(rs, kept) : NULL;
    }
    for (size_t i = 0; i < kept; i++)
        free(rs[i].metrics);
    free(rs);
    /* readings are numbered: this message carries seq .. seq + kept - 1 */
    b->seq = u->st.seq + 1;
    b->n_readings = kept;
    b->payload = arr ? ch_telemetry_wrap(u->cfg->site, u->cfg->gateway, b->seq, ch_now_ms(), false,
                                         arr, strlen(arr))
                     : NULL;
    free(arr);
    if (!b->payload) {
        batch_free(b);
        return NULL;
    }
    u->st.seq += kept;
    return b;
}

static bool batch_due(struct uplink *u, int64_t now)
{
    if (u->q_len == 0)
        return false;
    if (u->stopping || u->q_len >= (size_t)u->cfg->uplink.batch_max)
        return true;
    return now - u->q[u->q_head].t_ms >= u->cfg->uplink.batch_interval_ms;
}

static void wait_until(struct uplink *u, int64_t until)
{
    struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (long)(until % 1000) * 1000000};
    pthread_cond_timedwait(&u->cond, &u->lock, &ts);
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

static void *sender(void *arg)
{
    struct uplink *u = arg;
    lock(u);
    for (;;) {
        int64_t now = ch_mono_ms();
        if (u->stopping &&
            ((u->q_len == 0 && !u->retry && !u->inflight) || now >= u->stop_deadline))
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
            int rc = send_raw(u, u->topic_status, u->birth_payload, true, NULL);
            if (rc != MQTTASYNC_SUCCESS)
                LOGW("uplink", NULL, "cannot publish birth: %s", MQTTAsync_strerror(rc));
            lock(u);
            continue;
        }
        struct batch *b = NULL;
        if (u->n_inflight < (size_t)u->cfg->uplink.max_inflight) {
            if (u->retry) {
                b = u->retry;
                u->retry = b->next;
                b->next = NULL;
            } else if (batch_due(u, now)) {
                b = make_batch(u);
                if (!b)
                    continue;
            }
        }
        if (!b) {
            int64_t until = now + 200;
            if (u->q_len && u->n_inflight < (size_t)u->cfg->uplink.max_inflight)
                until = u->q[u->q_head].t_ms + u->cfg->uplink.batch_interval_ms;
            wait_until(u, until);
            continue;
        }
        b->id = ++u->next_batch_id;
        struct ticket *t = ch_xcalloc(1, sizeof *t);
        t->u = u;
        t->batch_id = b->id;
        t->next = u->tickets;
        if (u->tickets)
            u->tickets->prev = t;
        u->tickets = t;
        b->next = u->inflight;
        u->inflight = b;
        u->n_inflight++;
        unlock(u);
        int rc = send_raw(u, u->topic_telemetry, b->payload, false, t);
        lock(u);
        if (rc != MQTTASYNC_SUCCESS) {
            /* not queued by Paho: no callback will come for this ticket */
            struct batch *back = inflight_take(u, t->batch_id);
            ticket_drop(u, t);
            if (back) {
                u->st.publish_failures++;
                retry_insert(u, back);
            }
            if (rc == MQTTASYNC_DISCONNECTED)
                u->connected = false;
            LOGD("uplink", NULL, "send failed: %s", MQTTAsync_strerror(rc));
            wait_until(u, ch_mono_ms() + 100);
        }
    }
    unlock(u);
    return NULL;
}

int uplink_start(struct uplink *u)
{
    int rc = pthread_create(&u->thread, NULL, sender, u);
    if (rc != 0)
        return -rc;
    u->thread_started = true;
    return 0;
}

void uplink_submit(struct uplink *u, struct ch_reading *r, int dev)
{
    lock(u);
    if (u->q_len == u->q_cap) {
        if (u->q_cap < (size_t)u->cfg->uplink.queue_max) {
            size_t ncap = u->q_cap * 2;
            if (ncap > (size_t)u->cfg->uplink.queue_max)
                ncap = (size_t)u->cfg->uplink.queue_max;
            struct qent *nq = ch_xcalloc(ncap, sizeof *nq);
            for (size_t i = 0; i < u->q_len; i++)
                nq[i] = u->q[(u->q_head + i) % u->q_cap];
            free(u->q);
            u->q = nq;
            u->q_cap = ncap;
            u->q_head = 0;
        } else {
            /* full: the oldest reading goes, and is counted */
            free(u->q[u->q_head].r.metrics);
            u->q_head = (u->q_head + 1) % u->q_cap;
            u->q_len--;
            if (u->st.dropped++ % 1000 == 0)
                LOGW("uplink", NULL, "queue full (%zu readings): dropping the oldest (%llu so far)",
                     u->q_cap, (unsigned long long)u->st.dropped);
        }
    }
    struct qent *e = &u->q[(u->q_head + u->q_len) % u->q_cap];
    e->r = *r;
    e->t_ms = ch_mono_ms();
    e->dev = dev >= 0 && (size_t)dev < u->n_dev ? dev : -1;
    u->q_len++;
    r->metrics = NULL;
    r->n_metrics = 0;
    if (batch_due(u, e->t_ms))
        pthread_cond_broadcast(&u->cond);
    unlock(u);
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

    lock(u);
    bool connected = u->connected;
    size_t undelivered = u->q_len;
    for (struct batch *b = u->retry; b; b = b->next)
        undelivered += b->n_readings;
    for (struct batch *b = u->inflight; b; b = b->next)
        undelivered += b->n_readings;
    unlock(u);
    if (undelivered)
        LOGW("uplink", NULL, "%zu reading(s) not delivered at shutdown", undelivered);

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
    while (u->tickets)
        ticket_drop(u, u->tickets);
    for (struct batch *b = u->retry, *n; b; b = n) {
        n = b->next;
        batch_free(b);
    }
    for (struct batch *b = u->inflight, *n; b; b = n) {
        n = b->next;
        batch_free(b);
    }
    for (size_t i = 0; i < u->q_len; i++)
        free(u->q[(u->q_head + i) % u->q_cap].r.metrics);
    free(u->q);
    free(u->dev_published);
    free(u->birth_payload);
    free(u->will_payload);
    pthread_mutex_destroy(&u->lock);
    pthread_cond_destroy(&u->cond);
    free(u);
}

void uplink_get_stats(struct uplink *u, struct uplink_stats *out)
{
    lock(u);
    *out = u->st;
    out->queued = u->q_len;
    out->connected = u->connected;
    unlock(u);
}

uint64_t uplink_device_published(struct uplink *u, size_t i)
{
    lock(u);
    uint64_t v = i < u->n_dev ? u->dev_published[i] : 0;
    unlock(u);
    return v;
}
