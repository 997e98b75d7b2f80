#include "presence.h"
#include "codec.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A chained hash table keyed by "site/gateway"; it doubles when it holds as
 * many entries as buckets. A district has hundreds of gateways, a city tens
 * of thousands: both fit. */
struct entry {
    struct entry *next;
    char key[2 * CH_ID_MAX]; /* site/gateway */
    bool known;              /* a status has been applied */
    bool online;
    char version[CH_VERSION_MAX];
    int64_t status_ts;      /* newest status ts applied (a will has none) */
    int64_t last_telemetry; /* wall ms of the last telemetry, 0 if none */
};

struct presence {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t n_buckets, n_entries, n_online;
};

struct presence *presence_new(void)
{
    struct presence *p = ch_xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->n_buckets = 64;
    p->buckets = ch_xcalloc(p->n_buckets, sizeof *p->buckets);
    return p;
}

void presence_free(struct presence *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_buckets; i++) {
        struct entry *e = p->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(p->buckets);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static uint64_t hash(const char *s)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static void grow(struct presence *p)
{
    size_t n = p->n_buckets * 2;
    struct entry **b = ch_xcalloc(n, sizeof *b);
    for (size_t i = 0; i < p->n_buckets; i++) {
        struct entry *e = p->buckets[i];
        while (e) {
            struct entry *next = e->next;
            size_t at = hash(e->key) % n;
            e->next = b[at];
            b[at] = e;
            e = next;
        }
    }
    free(p->buckets);
    p->buckets = b;
    p->n_buckets = n;
}

/* Finds or adds the entry; called with the lock held. */
static struct entry *lookup(struct presence *p, const char *site, const char *gateway)
{
    char key[2 * CH_ID_MAX];
    snprintf(key, sizeof key, "%s/%s", site, gateway);
    size_t at = hash(key) % p->n_buckets;
    for (struct entry *e = p->buckets[at]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (p->n_entries >= p->n_buckets) {
        grow(p);
        at = hash(key) % p->n_buckets;
    }
    struct entry *e = ch_xcalloc(1, sizeof *e);
    memcpy(e->key, key, sizeof key);
    e->next = p->buckets[at];
    p->buckets[at] = e;
    p->n_entries++;
    return e;
}

void presence_status(struct presence *p, const struct ch_status *s, int64_t now_ms)
{
    pthread_mutex_lock(&p->lock);
    struct entry *e = lookup(p, s->site, s->gateway);
    if (s->ts_ms != 0 && s->ts_ms < e->status_ts) {
        LOGD("presence", e->key, "status of %" PRId64 " is older than %" PRId64 ": ignored",
             s->ts_ms, e->status_ts);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    bool was_known = e->known, was_online = e->online;
    e->known = true;
    e->online = s->online;
    if (s->ts_ms != 0)
        e->status_ts = s->ts_ms;
    if (s->version[0])
        memcpy(e->version, s->version, sizeof e->version);
    if (s->online && !was_online) {
        p->n_online++;
        LOGI("presence", e->key, "online (version %s)", e->version);
    } else if (!s->online && (was_online || !was_known)) {
        if (was_online)
            p->n_online--;
        if (e->last_telemetry)
            LOGI("presence", e->key, "offline (last telemetry %" PRId64 " s ago)",
                 (now_ms - e->last_telemetry) / 1000);
        else
            LOGI("presence", e->key, "offline (no telemetry since the hub started)");
    }
    pthread_mutex_unlock(&p->lock);
}

void presence_telemetry(struct presence *p, const char *site, const char *gateway, int64_t now_ms)
{
    pthread_mutex_lock(&p->lock);
    lookup(p, site, gateway)->last_telemetry = now_ms;
    pthread_mutex_unlock(&p->lock);
}

size_t presence_online(struct presence *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->n_online;
    pthread_mutex_unlock(&p->lock);
    return n;
}
