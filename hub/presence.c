#include "presence.h"
#include "codec.h"
#include "err.h"
#include "fileio.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A chained hash table keyed by "site/gateway"; it doubles when it holds as
 * many entries as buckets. A district has hundreds of gateways, a city tens
 * of thousands: both fit.
 *
 * NUMBERS. Each gateway numbers its readings and its alerts (two lanes, the
 * same logic). Per lane: hi, the highest number received, and the gaps below
 * it, sorted and disjoint. A gap is pending while the gateway may still send
 * it, lost once it cannot:
 *   - the gateway declares `oldest` (birth, telemetry, alerts): it still
 *     holds every number from there on, and keeps each until a hub
 *     acknowledges it. A number below `oldest` that this hub never received
 *     is lost for good, exactly: reported at once.
 *   - a gateway that never declared `oldest` (older software) gets the old
 *     rule: a gap open gap_grace without a replay from it is reported lost.
 * The numbers before the first one received form the `initial` gap, from the
 * gateway's first number (1) on: resolved by `oldest` alone (an older
 * gateway's history before the hub started is not this hub's to judge), and
 * not counted as pending.
 * The state is saved (presence_save) before the hub acknowledges anything,
 * so a hub restarted knows what it had received before: the gateway frees
 * what was acknowledged, and its `oldest` moves past it. */
/* Numbers lo..hi not received yet, open since `since` (wall ms). */
struct gap {
    uint64_t lo, hi;
    int64_t since;
    bool initial; /* before the first number received */
};

/* Open gaps kept per gateway and lane; beyond this the oldest is reported at once. */
#define MAX_GAPS 4096

struct lane {
    uint64_t hi;     /* highest number seen, 0: none yet */
    uint64_t oldest; /* highest `oldest` declared, 0: never */
    size_t n_gaps, cap_gaps;
    struct gap *gaps; /* sorted, disjoint, all below hi */
};

struct entry {
    struct entry *next;
    struct lane lane[2];     /* PRESENCE_READINGS, PRESENCE_ALERTS */
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
    bool dirty;         /* numbers changed since the last save */
    bool statuses_only; /* presence_statuses_only */
};

struct presence *presence_new(void)
{
    struct presence *p = ch_xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->n_buckets = 64;
    p->buckets = ch_xcalloc(p->n_buckets, sizeof *p->buckets);
    return p;
}

void presence_statuses_only(struct presence *p)
{
    p->statuses_only = true;
}

void presence_free(struct presence *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_buckets; i++) {
        struct entry *e = p->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e->lane[0].gaps);
            free(e->lane[1].gaps);
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
    return ch_fnv1a(CH_FNV1A_INIT, s, strlen(s));
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

static void declare_oldest(struct presence *p, struct entry *e, int L, uint64_t oldest);

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
    if (s->online && s->oldest_reading && !p->statuses_only)
        declare_oldest(p, e, PRESENCE_READINGS, s->oldest_reading);
    if (s->online && s->oldest_alert && !p->statuses_only)
        declare_oldest(p, e, PRESENCE_ALERTS, s->oldest_alert);
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

static const char *const lane_what[2] = {"readings", "alerts"};

/* The counters of lane L. */
static uint64_t *missing(struct presence *p, int L)
{
    return L ? &p->seq.alerts_missing : &p->seq.readings_missing;
}

static uint64_t *pending(struct presence *p, int L)
{
    return L ? &p->seq.alerts_pending : &p->seq.readings_pending;
}

/* Reports lo..hi of lane L lost; `counted` says they were counted pending. */
static void report_lost(struct presence *p, struct entry *e, int L, uint64_t lo, uint64_t hi,
                        bool counted, const char *why)
{
    uint64_t n = hi - lo + 1;
    LOGW("presence", e->key, "%s %" PRIu64 "..%" PRIu64 " lost (%" PRIu64 ") %s", lane_what[L], lo,
         hi, n, why);
    p->seq.gaps_reported++;
    *missing(p, L) += n;
    if (counted)
        *pending(p, L) -= n;
    p->dirty = true;
}

static void report_gap(struct presence *p, struct entry *e, int L, const struct gap *g,
                       const char *why)
{
    report_lost(p, e, L, g->lo, g->hi, !g->initial, why);
}

/* Inserts g at index i of the lane's gaps. Lock held. */
static void gap_insert(struct lane *l, size_t i, struct gap g)
{
    if (l->n_gaps == l->cap_gaps) {
        l->cap_gaps = l->cap_gaps ? 2 * l->cap_gaps : 4;
        l->gaps = ch_xrealloc(l->gaps, l->cap_gaps * sizeof *l->gaps);
    }
    memmove(&l->gaps[i + 1], &l->gaps[i], (l->n_gaps - i) * sizeof g);
    l->gaps[i] = g;
    l->n_gaps++;
}

static void gap_remove(struct lane *l, size_t i)
{
    memmove(&l->gaps[i], &l->gaps[i + 1], (l->n_gaps - i - 1) * sizeof *l->gaps);
    l->n_gaps--;
}

/* Keeps at most MAX_GAPS open: the oldest beyond are reported now. */
static void gap_trim(struct presence *p, struct entry *e, int L)
{
    struct lane *l = &e->lane[L];
    while (l->n_gaps > MAX_GAPS) {
        report_gap(p, e, L, &l->gaps[0], "(too many gaps open)");
        gap_remove(l, 0);
    }
}

/* Removes lo..hi from the lane's open gaps; returns how many numbers of that
 * range were in a gap (the rest are duplicates). Lock held. */
static uint64_t fill_gaps(struct presence *p, struct entry *e, int L, uint64_t lo, uint64_t hi)
{
    struct lane *l = &e->lane[L];
    uint64_t filled = 0;
    for (size_t i = 0; i < l->n_gaps;) {
        struct gap *g = &l->gaps[i];
        if (hi < g->lo || lo > g->hi) {
            i++;
            continue;
        }
        uint64_t a = lo > g->lo ? lo : g->lo, b = hi < g->hi ? hi : g->hi;
        filled += b - a + 1;
        if (!g->initial)
            *pending(p, L) -= b - a + 1;
        if (a > g->lo && b < g->hi) { /* the middle came: split */
            struct gap right = {b + 1, g->hi, g->since, g->initial};
            g->hi = a - 1;
            gap_insert(l, i + 1, right);
            i += 2;
        } else if (a > g->lo) {
            g->hi = a - 1;
            i++;
        } else if (b < g->hi) {
            g->lo = b + 1;
            i++;
        } else {
            gap_remove(l, i);
        }
    }
    gap_trim(p, e, L);
    return filled;
}

/* The gateway no longer holds numbers below oldest: what of them this hub
 * never received is lost. Lock held. */
static void declare_oldest(struct presence *p, struct entry *e, int L, uint64_t oldest)
{
    struct lane *l = &e->lane[L];
    if (oldest <= l->oldest)
        return; /* old news (a retained birth replayed) */
    l->oldest = oldest;
    p->dirty = true;
    char why[96];
    snprintf(why, sizeof why, "for good: the gateway holds from %" PRIu64 " on", oldest);
    size_t kept = 0;
    for (size_t i = 0; i < l->n_gaps; i++) {
        struct gap g = l->gaps[i];
        if (g.lo < oldest) {
            uint64_t b = g.hi < oldest - 1 ? g.hi : oldest - 1;
            report_lost(p, e, L, g.lo, b, !g.initial, why);
            if (b == g.hi)
                continue;
            g.lo = b + 1;
        }
        l->gaps[kept++] = g;
    }
    l->n_gaps = kept;
    if (l->hi + 1 < oldest) { /* never received, not even a later number */
        report_lost(p, e, L, l->hi + 1, oldest - 1, false, why);
        l->hi = oldest - 1;
    }
}

/* Numbers lo..hi of lane L arrived (historical: replayed from the gateway's
 * spool; a replay may start again from 1, a live message from 1 below what
 * was seen means the gateway's spool started afresh). Lock held. */
static void receive(struct presence *p, struct entry *e, int L, uint64_t lo, uint64_t hi,
                    bool historical, int64_t now_ms)
{
    struct lane *l = &e->lane[L];
    p->dirty = true;
    if (historical) /* the gateway is replaying: its gaps may still fill */
        for (size_t i = 0; i < l->n_gaps; i++)
            l->gaps[i].since = now_ms;
    if (!historical && l->hi != 0 && lo <= 1 && l->hi > hi) {
        /* numbering started again: the gateway's spool was reset */
        LOGW("presence", e->key,
             "%s numbers restarted at %" PRIu64 " (were at %" PRIu64 "): gateway spool reset?",
             L ? "alert" : "reading", lo, l->hi);
        for (size_t i = 0; i < l->n_gaps; i++)
            report_gap(p, e, L, &l->gaps[i], "before the restart");
        l->n_gaps = 0;
        l->hi = 0;
        l->oldest = 0;
    }
    if (l->hi == 0 && l->n_gaps == 0) {
        /* the first received: what came before is unknown until the gateway
         * says what it still holds */
        if (lo > 1)
            gap_insert(l, 0, (struct gap){1, lo - 1, now_ms, true});
        l->hi = lo - 1;
    }
    uint64_t below_hi = lo <= l->hi ? (hi < l->hi ? hi : l->hi) : 0;
    if (below_hi) {
        uint64_t filled = fill_gaps(p, e, L, lo, below_hi);
        if (!L)
            p->seq.readings_duplicate += below_hi - lo + 1 - filled;
    }
    if (hi > l->hi) {
        uint64_t from = lo > l->hi ? lo : l->hi + 1;
        if (from > l->hi + 1) {
            gap_insert(l, l->n_gaps, (struct gap){l->hi + 1, from - 1, now_ms, false});
            *pending(p, L) += from - 1 - l->hi;
            LOGD("presence", e->key, "%s %" PRIu64 "..%" PRIu64 " not received yet", lane_what[L],
                 l->hi + 1, from - 1);
            gap_trim(p, e, L);
        }
        l->hi = hi;
    }
}

void presence_telemetry(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                        size_t n, bool historical, uint64_t oldest, int64_t now_ms)
{
    if (n == 0 || seq == 0)
        return;
    pthread_mutex_lock(&p->lock);
    struct entry *e = lookup(p, site, gateway);
    e->last_telemetry = now_ms;
    receive(p, e, PRESENCE_READINGS, seq, seq + n - 1, historical, now_ms);
    if (oldest)
        declare_oldest(p, e, PRESENCE_READINGS, oldest);
    pthread_mutex_unlock(&p->lock);
}

void presence_alert(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                    uint64_t oldest, int64_t now_ms)
{
    if (seq == 0)
        return;
    pthread_mutex_lock(&p->lock);
    struct entry *e = lookup(p, site, gateway);
    receive(p, e, PRESENCE_ALERTS, seq, seq, false, now_ms);
    if (oldest)
        declare_oldest(p, e, PRESENCE_ALERTS, oldest);
    pthread_mutex_unlock(&p->lock);
}

void presence_check_gaps(struct presence *p, int64_t now_ms, int64_t grace_ms,
                         struct presence_seq_stats *out)
{
    pthread_mutex_lock(&p->lock);
    for (size_t b = 0; b < p->n_buckets; b++) {
        for (struct entry *e = p->buckets[b]; e; e = e->next) {
            for (int L = 0; L < 2; L++) {
                struct lane *l = &e->lane[L];
                size_t kept = 0;
                for (size_t i = 0; i < l->n_gaps; i++) {
                    /* a gateway that says what it holds settles its gaps itself */
                    if (!l->oldest && !l->gaps[i].initial &&
                        now_ms - l->gaps[i].since >= grace_ms) {
                        char why[64];
                        snprintf(why, sizeof why, "after %" PRId64 " s without them",
                                 (now_ms - l->gaps[i].since) / 1000);
                        report_gap(p, e, L, &l->gaps[i], why);
                    } else {
                        l->gaps[kept++] = l->gaps[i];
                    }
                }
                l->n_gaps = kept;
            }
        }
    }
    if (out)
        *out = p->seq;
    pthread_mutex_unlock(&p->lock);
}

/* ---- saving the numbers ---------------------------------------------------
 * {"format":"carehub-presence/1","gateways":{"site/gw":{"readings":L,
 * "alerts":L}}} with L = {"hi":n,"oldest":n,"gaps":[[lo,hi,initial],...]}. */

#define SAVE_FORMAT "carehub-presence/1"

static json_t *lane_json(const struct lane *l)
{
    json_t *gaps = json_array();
    for (size_t i = 0; i < l->n_gaps; i++)
        json_array_append_new(gaps, json_pack("[IIb]", (json_int_t)l->gaps[i].lo,
                                              (json_int_t)l->gaps[i].hi, l->gaps[i].initial));
    return json_pack("{sIsIso}", "hi", (json_int_t)l->hi, "oldest", (json_int_t)l->oldest, "gaps",
                     gaps);
}

int presence_save(struct presence *p, const char *path)
{
    pthread_mutex_lock(&p->lock);
    if (!p->dirty) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    json_t *gws = json_object();
    for (size_t b = 0; b < p->n_buckets; b++)
        for (struct entry *e = p->buckets[b]; e; e = e->next)
            if (e->lane[0].hi || e->lane[1].hi || e->lane[0].n_gaps || e->lane[1].n_gaps)
                json_object_set_new(gws, e->key,
                                    json_pack("{soso}", "readings", lane_json(&e->lane[0]),
                                              "alerts", lane_json(&e->lane[1])));
    p->dirty = false;
    pthread_mutex_unlock(&p->lock);
    json_t *root = json_pack("{ssso}", "format", SAVE_FORMAT, "gateways", gws);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    int rc = text ? ch_write_atomic(path, text, strlen(text)) : -ENOMEM;
    free(text);
    if (rc != 0) {
        LOGE("presence", NULL, "cannot save the reading numbers to %s: %s", path, ch_strerror(rc));
        pthread_mutex_lock(&p->lock);
        p->dirty = true;
        pthread_mutex_unlock(&p->lock);
    }
    return rc;
}

/* Reads one lane; false if it is not what presence_save writes. */
static bool lane_load(const json_t *o, struct lane *l)
{
    json_int_t hi, oldest;
    json_t *gaps;
    if (!o || json_unpack((json_t *)o, "{sIsIso}", "hi", &hi, "oldest", &oldest, "gaps", &gaps) ||
        hi < 0 || oldest < 0 || !json_is_array(gaps))
        return false;
    l->hi = (uint64_t)hi;
    l->oldest = (uint64_t)oldest;
    size_t i;
    json_t *g;
    json_array_foreach(gaps, i, g)
    {
        json_int_t lo, gh;
        int initial;
        if (json_unpack(g, "[IIb]", &lo, &gh, &initial) || lo < 1 || gh < lo ||
            (uint64_t)gh >= l->hi + 1 || (l->n_gaps && (uint64_t)lo <= l->gaps[l->n_gaps - 1].hi))
            return false;
        gap_insert(l, l->n_gaps,
                   (struct gap){(uint64_t)lo, (uint64_t)gh, ch_now_ms(), initial != 0});
    }
    return true;
}

int presence_load(struct presence *p, const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (access(path, F_OK) != 0)
            return 0; /* a first start */
        LOGE("presence", NULL, "%s: %s (line %d): the reading numbers start afresh", path,
             jerr.text, jerr.line);
        return CH_EINVAL;
    }
    const char *format = json_string_value(json_object_get(root, "format"));
    json_t *gws = json_object_get(root, "gateways");
    int rc = 0;
    if (!format || strcmp(format, SAVE_FORMAT) != 0 || !json_is_object(gws))
        rc = CH_EINVAL;
    const char *key;
    json_t *v;
    size_t n = 0;
    pthread_mutex_lock(&p->lock);
    json_object_foreach(rc ? NULL : gws, key, v)
    {
        char site[CH_ID_MAX], gw[CH_ID_MAX];
        const char *slash = strchr(key, '/');
        if (!slash || (size_t)(slash - key) >= sizeof site ||
            !ch_strlcpy(gw, slash + 1, sizeof gw)) {
            rc = CH_EINVAL;
            break;
        }
        memcpy(site, key, (size_t)(slash - key));
        site[slash - key] = '\0';
        if (!ch_valid_id(site) || !ch_valid_id(gw)) {
            rc = CH_EINVAL;
            break;
        }
        struct entry *e = lookup(p, site, gw);
        if (!lane_load(json_object_get(v, "readings"), &e->lane[0]) ||
            !lane_load(json_object_get(v, "alerts"), &e->lane[1])) {
            rc = CH_EINVAL;
            break;
        }
        for (int L = 0; L < 2; L++)
            for (size_t i = 0; i < e->lane[L].n_gaps; i++)
                if (!e->lane[L].gaps[i].initial)
                    *pending(p, L) += e->lane[L].gaps[i].hi - e->lane[L].gaps[i].lo + 1;
        n++;
    }
    if (rc) { /* start afresh rather than from half a file */
        for (size_t b = 0; b < p->n_buckets; b++)
            for (struct entry *e = p->buckets[b]; e; e = e->next)
                for (int L = 0; L < 2; L++) {
                    free(e->lane[L].gaps);
                    memset(&e->lane[L], 0, sizeof e->lane[L]);
                }
        p->seq.readings_pending = p->seq.alerts_pending = 0;
    }
    pthread_mutex_unlock(&p->lock);
    json_decref(root);
    if (rc)
        LOGE("presence", NULL,
             "%s is damaged (after %zu gateway(s)): the reading numbers start afresh", path, n);
    else
        LOGI("presence", NULL, "reading and alert numbers of %zu gateway(s) read from %s", n, path);
    return rc;
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
