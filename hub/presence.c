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
/* Readings lo..hi not received yet, open since `since` (wall ms). */
struct gap {
    uint64_t lo, hi;
    int64_t since;
};

/* Open gaps kept per gateway; beyond this the oldest is reported at once. */
#define MAX_GAPS 4096

struct entry {
    struct entry *next;
    uint64_t seq_hi; /* highest reading number seen, 0: none yet */
    size_t n_gaps, cap_gaps;
    struct gap *gaps;        /* sorted, disjoint, all below seq_hi */
    char key[2 * CH_ID_MAX]; /* site/gateway */
    bool known;              /* a status has been applied */
    bool online;
    char version[CH_VERSION_MAX];
    int64_t status_ts;      /* newest status ts applied (a will has none) */
    int64_t last_telemetry; /* wall ms of the last telemetry, 0 if none */
    int64_t status_rx;      /* wall ms the last status was applied */
    size_t n_devices;       /* in the last birth */
};

struct presence {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t n_buckets, n_entries, n_online;
    struct presence_seq_stats seq;
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
            free(e->gaps);
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
    if (s->online)
        e->n_devices = s->n_devices;
    e->status_rx = now_ms;
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

static void report_gap(struct presence *p, struct entry *e, const struct gap *g, const char *why)
{
    uint64_t n = g->hi - g->lo + 1;
    LOGW("presence", e->key, "readings %" PRIu64 "..%" PRIu64 " missing (%" PRIu64 ") %s", g->lo,
         g->hi, n, why);
    p->seq.gaps_reported++;
    p->seq.readings_missing += n;
    p->seq.readings_pending -= n;
}

/* Inserts g at index i of e's gaps. Lock held. */
static void gap_insert(struct entry *e, size_t i, struct gap g)
{
    if (e->n_gaps == e->cap_gaps) {
        e->cap_gaps = e->cap_gaps ? 2 * e->cap_gaps : 4;
        e->gaps = ch_xrealloc(e->gaps, e->cap_gaps * sizeof *e->gaps);
    }
    memmove(&e->gaps[i + 1], &e->gaps[i], (e->n_gaps - i) * sizeof g);
    e->gaps[i] = g;
    e->n_gaps++;
}

static void gap_remove(struct entry *e, size_t i)
{
    memmove(&e->gaps[i], &e->gaps[i + 1], (e->n_gaps - i - 1) * sizeof *e->gaps);
    e->n_gaps--;
}

/* Keeps at most MAX_GAPS open: the oldest beyond are reported now. */
static void gap_trim(struct presence *p, struct entry *e)
{
    while (e->n_gaps > MAX_GAPS) {
        report_gap(p, e, &e->gaps[0], "(too many gaps open)");
        gap_remove(e, 0);
    }
}

/* Removes lo..hi from the open gaps of e; returns how many readings of that
 * range were in a gap (the rest are duplicates). Lock held. */
static uint64_t fill_gaps(struct presence *p, struct entry *e, uint64_t lo, uint64_t hi)
{
    uint64_t filled = 0;
    for (size_t i = 0; i < e->n_gaps;) {
        struct gap *g = &e->gaps[i];
        if (hi < g->lo || lo > g->hi) {
            i++;
            continue;
        }
        uint64_t a = lo > g->lo ? lo : g->lo, b = hi < g->hi ? hi : g->hi;
        filled += b - a + 1;
        if (a > g->lo && b < g->hi) { /* the middle came: split */
            struct gap right = {b + 1, g->hi, g->since};
            g->hi = a - 1;
            gap_insert(e, i + 1, right);
            i += 2;
        } else if (a > g->lo) {
            g->hi = a - 1;
            i++;
        } else if (b < g->hi) {
            g->lo = b + 1;
            i++;
        } else {
            gap_remove(e, i);
        }
    }
    p->seq.readings_pending -= filled;
    gap_trim(p, e);
    return filled;
}

void presence_telemetry(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                        size_t n, bool historical, int64_t now_ms)
{
    if (n == 0)
        return;
    uint64_t lo = seq, hi = seq + n - 1;
    pthread_mutex_lock(&p->lock);
    struct entry *e = lookup(p, site, gateway);
    e->last_telemetry = now_ms;
    if (historical) /* the gateway is replaying: its gaps may still fill */
        for (size_t i = 0; i < e->n_gaps; i++)
            e->gaps[i].since = now_ms;
    if (e->seq_hi != 0 && lo <= 1 && e->seq_hi > hi) {
        /* numbering started again: the gateway's spool was reset */
        LOGW("presence", e->key,
             "reading numbers restarted at %" PRIu64 " (were at %" PRIu64 "): gateway spool reset?",
             lo, e->seq_hi);
        for (size_t i = 0; i < e->n_gaps; i++)
            report_gap(p, e, &e->gaps[i], "before the restart");
        e->n_gaps = 0;
        e->seq_hi = 0;
    }
    if (e->seq_hi == 0) {
        e->seq_hi = hi; /* what came before the hub started is not this hub's to judge */
    } else {
        uint64_t below_hi = lo <= e->seq_hi ? (hi < e->seq_hi ? hi : e->seq_hi) : 0;
        if (below_hi) {
            uint64_t filled = fill_gaps(p, e, lo, below_hi);
            p->seq.readings_duplicate += below_hi - lo + 1 - filled;
        }
        if (hi > e->seq_hi) {
            uint64_t from = lo > e->seq_hi ? lo : e->seq_hi + 1;
            if (from > e->seq_hi + 1) {
                gap_insert(e, e->n_gaps, (struct gap){e->seq_hi + 1, from - 1, now_ms});
                p->seq.readings_pending += from - 1 - e->seq_hi;
                gap_trim(p, e);
                LOGD("presence", e->key, "readings %" PRIu64 "..%" PRIu64 " not received yet",
                     e->seq_hi + 1, from - 1);
            }
            e->seq_hi = hi;
        }
    }
    pthread_mutex_unlock(&p->lock);
}

void presence_check_gaps(struct presence *p, int64_t now_ms, int64_t grace_ms,
                         struct presence_seq_stats *out)
{
    pthread_mutex_lock(&p->lock);
    for (size_t b = 0; b < p->n_buckets; b++) {
        for (struct entry *e = p->buckets[b]; e; e = e->next) {
            size_t kept = 0;
            for (size_t i = 0; i < e->n_gaps; i++) {
                if (now_ms - e->gaps[i].since >= grace_ms) {
                    char why[64];
                    snprintf(why, sizeof why, "for %" PRId64 " s: reported lost",
                             (now_ms - e->gaps[i].since) / 1000);
                    report_gap(p, e, &e->gaps[i], why);
                } else {
                    e->gaps[kept++] = e->gaps[i];
                }
            }
            e->n_gaps = kept;
        }
    }
    if (out)
        *out = p->seq;
    pthread_mutex_unlock(&p->lock);
}

size_t presence_online(struct presence *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->n_online;
    pthread_mutex_unlock(&p->lock);
    return n;
}

size_t presence_list(struct presence *p, struct presence_gw **out)
{
    int64_t now = ch_now_ms();
    pthread_mutex_lock(&p->lock);
    struct presence_gw *v = ch_xcalloc(p->n_entries ? p->n_entries : 1, sizeof *v);
    size_t n = 0;
    for (size_t b = 0; b < p->n_buckets; b++) {
        for (struct entry *e = p->buckets[b]; e; e = e->next) {
            if (!e->known)
                continue;
            struct presence_gw *g = &v[n++];
            const char *slash = strchr(e->key, '/');
            size_t sl = (size_t)(slash - e->key);
            memcpy(g->site, e->key, sl);
            g->site[sl] = '\0';
            ch_strlcpy(g->gateway, slash + 1, sizeof g->gateway);
            g->online = e->online;
            memcpy(g->version, e->version, sizeof g->version);
            g->status_ts = e->status_ts;
            g->last_seen = e->last_telemetry > e->status_rx ? e->last_telemetry : e->status_rx;
            if (e->online && g->last_seen < now)
                g->last_seen = now; /* its connection is up: seen now */
            g->n_devices = e->n_devices;
        }
    }
    pthread_mutex_unlock(&p->lock);
    *out = v;
    return n;
}
