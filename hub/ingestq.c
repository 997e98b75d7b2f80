/* The ingest queue. See ingestq.h for what it is for.
 *
 * A gateway with messages queued has an entry (struct gq) in a hash table
 * and, while no worker holds it, a place in the `ready` list: workers take
 * the gateway at the head, handle the first of its messages, and put it back
 * at the tail if it has more (round robin: one message per gateway per
 * turn), or free it. A gateway being handled is `busy` and out of the list,
 * so no two workers handle one gateway's messages at once, and its messages
 * keep their order. Everything under one lock, held only to link and unlink:
 * the handling itself (parsing, the spool) runs without it. */
#include "ingestq.h"
#include "codec.h"
#include "hubcfg.h"
#include "ingest.h"
#include "log.h"
#include "registry.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 16
#define N_BUCKETS   1024 /* gateways with messages queued: a few at once, rarely hundreds */
#define FULL_LOG_MS 10000

struct item {
    struct item *next;
    int64_t now_ms;
    bool retained;
    size_t len;
    char *topic; /* in the same allocation, after the payload */
    char payload[];
};

struct gq {
    struct gq *next_hash;
    struct gq *next_ready;
    char key[2 * CH_ID_MAX]; /* site/gateway */
    struct item *head, *tail;
    size_t bytes;
    bool busy;  /* a worker holds it */
    bool ready; /* in the ready list */
};

struct ingestq {
    struct ingest *in;
    struct registry *reg;
    size_t gw_max, total_max;
    pthread_mutex_t lock;
    pthread_cond_t work;                    /* a gateway is ready, or closing */
    pthread_cond_t alert;                   /* an alert is waiting, or closing */
    struct item *alerts_head, *alerts_tail; /* alarm transitions, in arrival order */
    size_t n_alerts;
    size_t alert_bytes; /* their payloads */
    pthread_t alert_worker;
    bool alert_worker_started;
    struct gq *buckets[N_BUCKETS];
    struct gq *ready_head, *ready_tail;
    size_t bytes, peak, n_gq;
    bool closing;
    int64_t full_logged; /* monotonic ms of the last "full" log line */
    uint64_t queued, shed_full;
    pthread_t workers[MAX_WORKERS];
    int n_workers;
};

static size_t bucket_of(const char *key)
{
    return (size_t)(ch_fnv1a(CH_FNV1A_INIT, key, strlen(key)) % N_BUCKETS);
}

static struct gq *find(struct ingestq *q, const char *key)
{
    for (struct gq *g = q->buckets[bucket_of(key)]; g; g = g->next_hash)
        if (!strcmp(g->key, key))
            return g;
    return NULL;
}

static void unhash(struct ingestq *q, struct gq *g)
{
    struct gq **link = &q->buckets[bucket_of(g->key)];
    while (*link != g)
        link = &(*link)->next_hash;
    *link = g->next_hash;
    q->n_gq--;
}

static void make_ready(struct ingestq *q, struct gq *g)
{
    g->ready = true;
    g->next_ready = NULL;
    if (q->ready_tail)
        q->ready_tail->next_ready = g;
    else
        q->ready_head = g;
    q->ready_tail = g;
    pthread_cond_signal(&q->work);
}

/* Takes the next gateway's first message, or NULL when closing with nothing
 * left. Lock held. */
static struct item *take(struct ingestq *q, struct gq **from)
{
    while (!q->ready_head && !(q->closing && q->bytes == 0 && q->n_gq == 0))
        pthread_cond_wait(&q->work, &q->lock);
    struct gq *g = q->ready_head;
    if (!g)
        return NULL;
    q->ready_head = g->next_ready;
    if (!q->ready_head)
        q->ready_tail = NULL;
    g->ready = false;
    g->busy = true;
    struct item *it = g->head;
    g->head = it->next;
    if (!g->head)
        g->tail = NULL;
    g->bytes -= it->len;
    q->bytes -= it->len;
    *from = g;
    return it;
}

/* The worker is done with g's message: back in the list if it has more,
 * else gone. Lock held. */
static void put_back(struct ingestq *q, struct gq *g)
{
    g->busy = false;
    if (g->head) {
        make_ready(q, g);
        return;
    }
    unhash(q, g);
    free(g);
    if (q->closing && q->n_gq == 0)
        pthread_cond_broadcast(&q->work); /* the others may end */
}

/* The alert worker: alarm transitions in the order they came, each into the
 * spool's alert lane (fsync'ed) and acknowledged, apart from telemetry and
 * never behind it; MQTT's thread does not wait on the disk for them. */
static void *work_alerts(void *arg)
{
    struct ingestq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->alerts_head && !q->closing)
            pthread_cond_wait(&q->alert, &q->lock);
        struct item *it = q->alerts_head;
        if (!it)
            break; /* closing, and none left */
        q->alerts_head = it->next;
        if (!q->alerts_head)
            q->alerts_tail = NULL;
        q->n_alerts--;
        q->alert_bytes -= it->len;
        pthread_mutex_unlock(&q->lock);
        ingest_message(q->in, it->topic, it->payload, it->len, it->retained, it->now_ms);
        free(it);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static void *work(void *arg)
{
    struct ingestq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct gq *g;
        struct item *it = take(q, &g);
        if (!it)
            break;
        pthread_mutex_unlock(&q->lock);
        ingest_queued(q->in, it->topic, it->payload, it->len, it->retained, it->now_ms);
        free(it);
        pthread_mutex_lock(&q->lock);
        put_back(q, g);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

struct ingestq *ingestq_new(struct ingest *in, struct registry *reg,
                            const struct hubcfg_ingest *cfg)
{
    struct ingestq *q = ch_xcalloc(1, sizeof *q);
    q->in = in;
    q->reg = reg;
    q->gw_max = (size_t)cfg->queue_bytes;
    q->total_max = (size_t)cfg->queue_max_bytes;
    q->full_logged = INT64_MIN / 2;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->work, NULL);
    pthread_cond_init(&q->alert, NULL);
    int rc = pthread_create(&q->alert_worker, NULL, work_alerts, q);
    q->alert_worker_started = rc == 0;
    if (rc) {
        LOGE("ingest", NULL, "cannot start the alert worker: %s", strerror(rc));
        ingestq_close(q);
        return NULL;
    }
    int n = cfg->workers < 1 ? 1 : cfg->workers > MAX_WORKERS ? MAX_WORKERS : (int)cfg->workers;
    for (int i = 0; i < n; i++) {
        rc = pthread_create(&q->workers[i], NULL, work, q);
        if (rc) {
            LOGE("ingest", NULL, "cannot start an ingest worker: %s", strerror(rc));
            ingestq_close(q);
            return NULL;
        }
        q->n_workers++;
    }
    return q;
}

/* A message that does not fit: shed, logged at most every FULL_LOG_MS. Lock
 * held. */
static void shed_full(struct ingestq *q, const char *key, size_t len, bool all)
{
    q->shed_full++;
    int64_t now = ch_mono_ms();
    if (now - q->full_logged < FULL_LOG_MS)
        return;
    q->full_logged = now;
    LOGW("ingest", key,
         "%s queue is full (%zu bytes queued): a telemetry message of %zu bytes is shed, not "
         "acknowledged (its spool keeps it); %" PRIu64 " shed so far",
         all ? "the hub's ingest" : "its", all ? q->bytes : find(q, key)->bytes, len, q->shed_full);
}

static struct item *item_new(const char *topic, const void *payload, size_t len, bool retained,
                             int64_t now_ms)
{
    size_t tlen = strlen(topic) + 1;
    struct item *it = ch_xmalloc(sizeof *it + len + tlen);
    *it = (struct item){.now_ms = now_ms, .retained = retained, .len = len};
    memcpy(it->payload, payload, len);
    it->topic = it->payload + len;
    memcpy(it->topic, topic, tlen);
    return it;
}

/* An alert for the alert worker; false if too many wait already. */
static bool push_alert(struct ingestq *q, const char *topic, const void *payload, size_t len,
                       bool retained, int64_t now_ms)
{
    pthread_mutex_lock(&q->lock);
    bool room = q->n_alerts < INGESTQ_ALERTS_MAX && len <= INGESTQ_ALERT_SIZE_MAX &&
                q->alert_bytes + len <= INGESTQ_ALERT_BYTES_MAX && !q->closing;
    if (room) {
        struct item *it = item_new(topic, payload, len, retained, now_ms);
        if (q->alerts_tail)
            q->alerts_tail->next = it;
        else
            q->alerts_head = it;
        q->alerts_tail = it;
        q->n_alerts++;
        q->alert_bytes += len;
        pthread_cond_signal(&q->alert);
    }
    pthread_mutex_unlock(&q->lock);
    return room;
}

void ingestq_push(struct ingestq *q, const char *topic, const void *payload, size_t len,
                  bool retained, int64_t now_ms)
{
    char site[CH_ID_MAX], gw[CH_ID_MAX];
    const char *kind;
    bool topic_ok = ch_topic_parse(topic, site, gw, &kind);
    if (topic_ok && strcmp(kind, "alert") == 0 && len <= INGEST_MAX_PAYLOAD &&
        push_alert(q, topic, payload, len, retained, now_ms))
        return;
    if (!topic_ok || strcmp(kind, "telemetry") != 0 || len > INGEST_MAX_PAYLOAD) {
        /* statuses, commands, what is refused unread (and alerts when too
         * many wait): at once */
        ingest_message(q->in, topic, payload, len, retained, now_ms);
        return;
    }
    if (!ingest_admit(q->in, site, gw))
        return; /* over its quota, or not registered: shed (counted) */
    char key[2 * CH_ID_MAX];
    snprintf(key, sizeof key, "%s/%s", site, gw);
    pthread_mutex_lock(&q->lock);
    struct gq *g = find(q, key);
    if (!g && len <= INGESTQ_SYNC_MAX) {
        /* small, and nothing of its gateway waits: handled here, in order,
         * before the broker's PUBACK is worth anything more */
        pthread_mutex_unlock(&q->lock);
        ingest_queued(q->in, topic, payload, len, retained, now_ms);
        return;
    }
    bool all_full = q->bytes + len > q->total_max;
    if (all_full || (g && g->bytes + len > q->gw_max)) {
        shed_full(q, key, len, all_full);
        pthread_mutex_unlock(&q->lock);
        if (q->reg)
            registry_shed(q->reg, site, gw);
        return;
    }
    struct item *it = item_new(topic, payload, len, retained, now_ms);
    if (!g) {
        g = ch_xcalloc(1, sizeof *g);
        memcpy(g->key, key, sizeof key);
        size_t b = bucket_of(key);
        g->next_hash = q->buckets[b];
        q->buckets[b] = g;
        q->n_gq++;
    }
    if (g->tail)
        g->tail->next = it;
    else
        g->head = it;
    g->tail = it;
    g->bytes += len;
    q->bytes += len;
    if (q->bytes > q->peak)
        q->peak = q->bytes;
    q->queued++;
    if (!g->busy && !g->ready)
        make_ready(q, g);
    pthread_mutex_unlock(&q->lock);
}

void ingestq_stats(struct ingestq *q, struct ingestq_stats *out)
{
    pthread_mutex_lock(&q->lock);
    *out = (struct ingestq_stats){.queued = q->queued,
                                  .shed_full = q->shed_full,
                                  .bytes = q->bytes,
                                  .peak_bytes = q->peak,
                                  .gateways = q->n_gq};
    pthread_mutex_unlock(&q->lock);
}

void ingestq_close(struct ingestq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->closing = true;
    pthread_cond_broadcast(&q->work);
    pthread_cond_broadcast(&q->alert);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->n_workers; i++)
        pthread_join(q->workers[i], NULL);
    if (q->alert_worker_started)
        pthread_join(q->alert_worker, NULL);
    /* no worker started: nothing was pushed (ingestq_new failed) */
    pthread_cond_destroy(&q->alert);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
