/* The noted numbers: a chained hash table of gateways, each with a sorted,
 * merged array of ranges per lane. See acks.h. */
#include "acks.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rset {
    struct ch_range *r; /* sorted by lo, disjoint, never adjacent */
    size_t n, cap;
};

struct gw {
    struct gw *next;
    char site[CH_ID_MAX], gateway[CH_ID_MAX];
    struct rset lane[2];
};

struct acks {
    pthread_mutex_t lock;
    struct gw **buckets;
    size_t n_buckets, n_entries;
};

struct acks *acks_new(void)
{
    struct acks *a = ch_xcalloc(1, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
    a->n_buckets = 64;
    a->buckets = ch_xcalloc(a->n_buckets, sizeof *a->buckets);
    return a;
}

static void gw_free(struct gw *g)
{
    free(g->lane[0].r);
    free(g->lane[1].r);
    free(g);
}

void acks_free(struct acks *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_buckets; i++)
        for (struct gw *g = a->buckets[i], *next; g; g = next) {
            next = g->next;
            gw_free(g);
        }
    free(a->buckets);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static size_t hash(const char *site, const char *gateway)
{
    /* over "site/gateway" */
    uint64_t h = ch_fnv1a(ch_fnv1a(CH_FNV1A_INIT, site, strlen(site)), "/", 1);
    return (size_t)ch_fnv1a(h, gateway, strlen(gateway));
}

static void grow(struct acks *a)
{
    size_t n = a->n_buckets * 2;
    struct gw **b = ch_xcalloc(n, sizeof *b);
    for (size_t i = 0; i < a->n_buckets; i++)
        for (struct gw *g = a->buckets[i], *next; g; g = next) {
            next = g->next;
            size_t at = hash(g->site, g->gateway) % n;
            g->next = b[at];
            b[at] = g;
        }
    free(a->buckets);
    a->buckets = b;
    a->n_buckets = n;
}

/* Finds or adds the gateway. Locked. */
static struct gw *lookup(struct acks *a, const char *site, const char *gateway)
{
    size_t at = hash(site, gateway) % a->n_buckets;
    for (struct gw *g = a->buckets[at]; g; g = g->next)
        if (!strcmp(g->site, site) && !strcmp(g->gateway, gateway))
            return g;
    if (a->n_entries >= a->n_buckets) {
        grow(a);
        at = hash(site, gateway) % a->n_buckets;
    }
    struct gw *g = ch_xcalloc(1, sizeof *g);
    ch_strlcpy(g->site, site, sizeof g->site);
    ch_strlcpy(g->gateway, gateway, sizeof g->gateway);
    g->next = a->buckets[at];
    a->buckets[at] = g;
    a->n_entries++;
    return g;
}

/* Adds lo..hi to s, merging with every range it overlaps or touches. */
static void rset_add(struct rset *s, uint64_t lo, uint64_t hi)
{
    /* first range whose hi + 1 >= lo: the first that may merge */
    size_t a = 0, b = s->n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (s->r[m].hi + 1 < lo)
            a = m + 1;
        else
            b = m;
    }
    size_t end = a; /* one past the last range that merges */
    while (end < s->n && s->r[end].lo <= hi + 1)
        end++;
    if (end > a) { /* ranges a..end-1 merge into one */
        uint64_t nlo = s->r[a].lo < lo ? s->r[a].lo : lo;
        uint64_t nhi = s->r[end - 1].hi > hi ? s->r[end - 1].hi : hi;
        s->r[a] = (struct ch_range){nlo, nhi};
        memmove(&s->r[a + 1], &s->r[end], (s->n - end) * sizeof *s->r);
        s->n -= end - a - 1;
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4;
        s->r = ch_xrealloc(s->r, s->cap * sizeof *s->r);
    }
    memmove(&s->r[a + 1], &s->r[a], (s->n - a) * sizeof *s->r);
    s->r[a] = (struct ch_range){lo, hi};
    s->n++;
}

void acks_note(struct acks *a, const char *site, const char *gateway, enum acks_lane lane,
               uint64_t lo, uint64_t hi)
{
    if (lo < 1 || lo > hi || hi > CH_NUMBER_MAX || (unsigned)lane > ACKS_ALERTS ||
        !ch_valid_id(site) || !ch_valid_id(gateway))
        return;
    pthread_mutex_lock(&a->lock);
    rset_add(&lookup(a, site, gateway)->lane[lane], lo, hi);
    pthread_mutex_unlock(&a->lock);
}

/* Moves up to CH_ACK_MAX_RANGES of s's lowest ranges to out. */
static size_t rset_take(struct rset *s, struct ch_range *out)
{
    size_t n = s->n < CH_ACK_MAX_RANGES ? s->n : CH_ACK_MAX_RANGES;
    if (n == 0)
        return 0; /* s->r may be NULL */
    memcpy(out, s->r, n * sizeof *out);
    memmove(s->r, s->r + n, (s->n - n) * sizeof *s->r);
    s->n -= n;
    return n;
}

size_t acks_take(struct acks *a, const char *hub, int64_t ts_ms, struct ch_ack **out)
{
    pthread_mutex_lock(&a->lock);
    struct ch_ack *v = ch_xcalloc(a->n_entries ? a->n_entries : 1, sizeof *v);
    size_t n = 0;
    for (size_t i = 0; i < a->n_buckets; i++) {
        struct gw **link = &a->buckets[i];
        while (*link) {
            struct gw *g = *link;
            struct ch_ack *k = &v[n++];
            memcpy(k->site, g->site, sizeof k->site);
            memcpy(k->gateway, g->gateway, sizeof k->gateway);
            if (hub && ch_valid_id(hub))
                ch_strlcpy(k->hub, hub, sizeof k->hub);
            k->ts_ms = ts_ms;
            k->n_readings = rset_take(&g->lane[ACKS_READINGS], k->readings);
            k->n_alerts = rset_take(&g->lane[ACKS_ALERTS], k->alerts);
            /* never empty: an entry exists only with something noted, and
             * goes below once all of it is taken */
            if (g->lane[0].n == 0 && g->lane[1].n == 0) {
                *link = g->next; /* a gateway that stops sending costs nothing */
                gw_free(g);
                a->n_entries--;
            } else {
                link = &g->next;
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
    *out = v;
    return n;
}

size_t acks_pending(struct acks *a)
{
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_entries;
    pthread_mutex_unlock(&a->lock);
    return n;
}
