/* The site registry: gateways, their declared inventories and their ingest
 * quotas. See registry.h for what it decides and why.
 *
 * A chained hash table of gateways keyed "site/gateway", as in presence.c.
 * Each gateway's inventory is an array of device ids sorted by id (a reading
 * is one binary search), each with the monotonic time until which it stays
 * declared: INT64_MAX while the newest birth (or the file) lists it, the
 * moment it left plus inventory_grace once a birth leaves it out. Before a
 * birth, the devices let through are a small unsorted set (at most
 * devices_before_birth). Both are replaced by the next birth. */
#include "registry.h"
#include "cfg.h"
#include "codec.h"
#include "hubcfg.h"
#include "err.h"
#include "lineproto.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Unregistered gateways named in the log; beyond, counted only. */
#define LOG_UNREGISTERED 256
/* A gateway counts as shedding (gateways_shedding, `shedding`) this long
 * after its last message shed, even if it has sent nothing since. */
#define SHEDDING_MS 10000

struct dev {
    char *id;
    int64_t until; /* monotonic ms; INT64_MAX: declared by the newest birth or the file */
};

struct gw {
    struct gw *next;
    char key[2 * CH_ID_MAX]; /* site/gateway */
    char site[CH_ID_MAX], gateway[CH_ID_MAX];
    bool born;         /* an inventory is known: a birth seen, or the file lists devices */
    bool listed;       /* in the operator's file */
    bool file_devices; /* ... with its devices: births do not change them */
    int64_t birth_ts;  /* ts of the newest birth applied */
    struct dev *devs;  /* sorted by id */
    size_t n_devs;
    char (*early)[CH_ID_MAX]; /* before a birth: the devices let through */
    size_t n_early, cap_early;
    char (*named)[CH_ID_MAX]; /* refused devices named in the log */
    size_t n_named;
    bool named_full, defer_logged, unregistered_logged;
    double tokens;
    int64_t refill_ms; /* monotonic */
    bool shedding;
    int64_t shed_ms;       /* monotonic: the last message shed */
    uint64_t shed_episode; /* messages shed since it went over its quota */
    uint64_t readings, refused, deferred, shed;
    bool changed; /* since the last registry_report */
};

struct registry {
    pthread_mutex_t lock;
    const struct hubcfg_ingest *cfg;
    struct gw **buckets;
    size_t n_buckets, n_gws;
    bool have_file;
    bool too_many_logged;
    size_t n_unregistered_logged;
    uint64_t refused, deferred, shed, unregistered;
};

/* ---- the table ---------------------------------------------------------- */

static uint64_t hash(const char *s)
{
    return ch_fnv1a(CH_FNV1A_INIT, s, strlen(s));
}

static void grow(struct registry *r)
{
    size_t n = r->n_buckets * 2;
    struct gw **b = ch_xcalloc(n, sizeof *b);
    for (size_t i = 0; i < r->n_buckets; i++)
        for (struct gw *g = r->buckets[i], *next; g; g = next) {
            next = g->next;
            size_t at = hash(g->key) % n;
            g->next = b[at];
            b[at] = g;
        }
    free(r->buckets);
    r->buckets = b;
    r->n_buckets = n;
}

/* The gateway's entry; added when add is set and there is room, else NULL.
 * Lock held. */
static struct gw *lookup(struct registry *r, const char *site, const char *gateway, bool add)
{
    char key[2 * CH_ID_MAX];
    snprintf(key, sizeof key, "%s/%s", site, gateway);
    size_t at = hash(key) % r->n_buckets;
    for (struct gw *g = r->buckets[at]; g; g = g->next)
        if (!strcmp(g->key, key))
            return g;
    if (!add)
        return NULL;
    if (r->n_gws >= REGISTRY_MAX_GATEWAYS) {
        if (!r->too_many_logged)
            LOGW("registry", key,
                 "more than %d gateways: new ones are not admitted (messages_unregistered)",
                 REGISTRY_MAX_GATEWAYS);
        r->too_many_logged = true;
        return NULL;
    }
    if (r->n_gws >= r->n_buckets) {
        grow(r);
        at = hash(key) % r->n_buckets;
    }
    struct gw *g = ch_xcalloc(1, sizeof *g);
    memcpy(g->key, key, sizeof key);
    ch_strlcpy(g->site, site, sizeof g->site);
    ch_strlcpy(g->gateway, gateway, sizeof g->gateway);
    g->tokens = (double)r->cfg->burst;
    g->refill_ms = ch_mono_ms();
    g->next = r->buckets[at];
    r->buckets[at] = g;
    r->n_gws++;
    return g;
}

static void devs_free(struct dev *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(d[i].id);
    free(d);
}

static void gw_free(struct gw *g)
{
    devs_free(g->devs, g->n_devs);
    free(g->early);
    free(g->named);
    free(g);
}

struct registry *registry_new(const struct hubcfg_ingest *cfg)
{
    struct registry *r = ch_xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->cfg = cfg;
    r->n_buckets = 64;
    r->buckets = ch_xcalloc(r->n_buckets, sizeof *r->buckets);
    if (cfg->registry && cfg->registry[0] && registry_load_file(r, cfg->registry) != 0) {
        registry_free(r);
        return NULL;
    }
    return r;
}

void registry_free(struct registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_buckets; i++)
        for (struct gw *g = r->buckets[i], *next; g; g = next) {
            next = g->next;
            gw_free(g);
        }
    free(r->buckets);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* ---- inventories ---------------------------------------------------------- */

static int dev_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dev *)a)->id, ((const struct dev *)b)->id);
}

static int dev_by_until(const void *a, const void *b)
{
    int64_t x = ((const struct dev *)a)->until, y = ((const struct dev *)b)->until;
    return x < y ? 1 : x > y ? -1 : 0; /* the longest-declared first */
}

static const struct dev *dev_find(const struct gw *g, const char *id)
{
    struct dev key = {.id = (char *)(uintptr_t)id};
    return g->n_devs ? bsearch(&key, g->devs, g->n_devs, sizeof *g->devs, dev_cmp) : NULL;
}

/* Sorts v[0..n) by id and drops repeated ids (the first kept). Returns the
 * new count. */
static size_t devs_unique(struct dev *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, dev_cmp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++) {
        if (!strcmp(v[i].id, v[k - 1].id)) {
            free(v[i].id);
            continue;
        }
        v[k++] = v[i];
    }
    return k;
}

/* Makes ids[0..n) the gateway's inventory at monotonic time now: they are
 * declared from now on; devices of the old inventory not among them stay
 * declared until inventory_grace after they left, in the room left under
 * max_devices. Returns how many were kept that way. Lock held. */
static size_t set_inventory(struct registry *r, struct gw *g, const char *const *ids, size_t n,
                            int64_t now)
{
    size_t max = (size_t)r->cfg->max_devices;
    struct dev *v = ch_xcalloc(n + g->n_devs + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ch_valid_id(ids[i]))
            v[k++] = (struct dev){ch_xstrdup(ids[i]), INT64_MAX};
    k = devs_unique(v, k);
    if (k > max) {
        for (size_t i = max; i < k; i++)
            free(v[i].id);
        k = max;
    }
    size_t fresh = k;
    /* those that left: still declared for the grace, the latest to leave first */
    struct dev *left = ch_xcalloc(g->n_devs + 1, sizeof *left);
    size_t nl = 0;
    for (size_t i = 0; i < g->n_devs; i++) {
        struct dev d = g->devs[i];
        if (bsearch(&d, v, fresh, sizeof *v, dev_cmp) || r->cfg->inventory_grace_ms == 0) {
            free(d.id);
            continue;
        }
        if (d.until == INT64_MAX)
            d.until = now + r->cfg->inventory_grace_ms;
        if (d.until <= now) {
            free(d.id);
            continue;
        }
        left[nl++] = d;
    }
    qsort(left, nl, sizeof *left, dev_by_until);
    size_t kept = 0;
    for (size_t i = 0; i < nl; i++) {
        if (k < max) {
            v[k++] = left[i];
            kept++;
        } else {
            free(left[i].id);
        }
    }
    free(left);
    free(g->devs); /* the ids moved to v or were freed */
    qsort(v, k, sizeof *v, dev_cmp);
    g->devs = v;
    g->n_devs = k;
    g->born = true;
    g->n_early = 0;
    g->n_named = 0; /* a device refused before may be declared now: named again */
    g->named_full = false;
    g->defer_logged = false;
    g->changed = true;
    return kept;
}

void registry_status(struct registry *r, const struct ch_status *s)
{
    if (!s->online)
        return; /* a will: the inventory stands */
    pthread_mutex_lock(&r->lock);
    struct gw *g = lookup(r, s->site, s->gateway, true);
    if (!g || (g->birth_ts && s->ts_ms <= g->birth_ts)) {
        pthread_mutex_unlock(&r->lock);
        return; /* old news, or the same birth from the other path */
    }
    g->birth_ts = s->ts_ms;
    if (g->file_devices) {
        LOGD("registry", g->key, "birth of %zu devices: the registry file's %zu devices stand",
             s->n_devices, g->n_devs);
        pthread_mutex_unlock(&r->lock);
        return;
    }
    const char **ids = ch_xcalloc(s->n_devices + 1, sizeof *ids);
    for (size_t i = 0; i < s->n_devices; i++)
        ids[i] = s->devices[i].id;
    size_t kept = set_inventory(r, g, ids, s->n_devices, ch_mono_ms());
    free(ids);
    if (s->n_devices > (size_t)r->cfg->max_devices)
        LOGW("registry", g->key,
             "its birth declares %zu devices, more than ingest.max_devices (%" PRId64
             "): readings of the rest are refused",
             s->n_devices, r->cfg->max_devices);
    if (kept)
        LOGI("registry", g->key,
             "inventory: %zu devices from its birth, and %zu it left out for "
             "ingest.inventory_grace",
             g->n_devs - kept, kept);
    else
        LOGI("registry", g->key, "inventory: %zu devices from its birth", g->n_devs);
    pthread_mutex_unlock(&r->lock);
}

/* ---- the operator's file --------------------------------------------------
 * gateways: [{site: ID, gateway: ID, devices: [ID, ...]}, ...] */

struct file_gw {
    char *site;
    char *gateway;
    struct cfg_list devices; /* char * */
    struct fy_node *node;
};

struct file_root {
    struct cfg_list gateways; /* struct file_gw */
};

/* clang-format off */
static const struct cfg_key file_gw_keys[] = {
    {.key = "site",    .type = CFG_ID,      .offset = offsetof(struct file_gw, site), .required = true},
    {.key = "gateway", .type = CFG_ID,      .offset = offsetof(struct file_gw, gateway), .required = true},
    {.key = "devices", .type = CFG_STRLIST, .offset = offsetof(struct file_gw, devices)},
    CFG_END,
};
static const struct cfg_key file_keys[] = {
    {.key = "gateways", .type = CFG_LIST, .offset = offsetof(struct file_root, gateways), .required = true,
     .sub = file_gw_keys, .elem_size = sizeof(struct file_gw), .node_offset = offsetof(struct file_gw, node)},
    CFG_END,
};
/* clang-format on */

/* The checks the key tables cannot make: device ids, repeated gateways,
 * max_devices. Returns the number of errors (reported). */
static int check_file(const struct registry *r, const struct file_root *f)
{
    int errors = 0;
    const struct file_gw *v = f->gateways.items;
    for (size_t i = 0; i < f->gateways.n; i++) {
        for (size_t j = 0; j < i; j++)
            if (!strcmp(v[i].site, v[j].site) && !strcmp(v[i].gateway, v[j].gateway)) {
                cfg_report(v[i].node, "gateway", "gateway %s/%s is listed twice", v[i].site,
                           v[i].gateway);
                errors++;
                break;
            }
        char *const *d = v[i].devices.items;
        for (size_t k = 0; k < v[i].devices.n; k++)
            if (!ch_valid_id(d[k])) {
                cfg_report(v[i].node, "devices",
                           "key 'devices': '%.80s' is not a device id ([A-Za-z0-9_.-])", d[k]);
                errors++;
            }
        if (v[i].devices.n > (size_t)r->cfg->max_devices) {
            cfg_report(v[i].node, "devices",
                       "key 'devices': %zu devices, more than ingest.max_devices (%" PRId64 ")",
                       v[i].devices.n, r->cfg->max_devices);
            errors++;
        }
    }
    return errors;
}

/* Applies a checked file. Lock held. */
static void apply_file(struct registry *r, const struct file_root *f)
{
    for (size_t i = 0; i < r->n_buckets; i++)
        for (struct gw *g = r->buckets[i]; g; g = g->next) {
            g->listed = false;
            g->file_devices = false; /* the file's last list stands until the next birth */
        }
    const struct file_gw *v = f->gateways.items;
    int64_t now = ch_mono_ms();
    for (size_t i = 0; i < f->gateways.n; i++) {
        struct gw *g = lookup(r, v[i].site, v[i].gateway, true);
        if (!g)
            continue;
        g->listed = true;
        g->unregistered_logged = false;
        if (v[i].devices.n) {
            set_inventory(r, g, (const char *const *)v[i].devices.items, v[i].devices.n, now);
            g->file_devices = true;
        }
    }
    r->have_file = true;
}

int registry_load_file(struct registry *r, const char *path)
{
    struct file_root f = {0};
    struct cfg_file *file = NULL;
    int rc = cfg_load(path, file_keys, &f, &file);
    if (rc == 0) {
        int errors = check_file(r, &f);
        if (errors) {
            fprintf(stderr, "%s: %d error%s\n", path, errors, errors == 1 ? "" : "s");
            rc = CH_ECONFIG;
        }
    }
    if (rc == 0) {
        pthread_mutex_lock(&r->lock);
        apply_file(r, &f);
        pthread_mutex_unlock(&r->lock);
        LOGI("registry", path, "%zu gateways registered", f.gateways.n);
    } else {
        LOGE("registry", path, "cannot use the registry file (%s): %s", ch_strerror(rc),
             r->have_file ? "the previous one stands" : "not starting");
    }
    if (file)
        cfg_file_close(file);
    cfg_free(file_keys, &f);
    return rc;
}

/* ---- admission and readings ------------------------------------------------ */

enum registry_admit registry_admit(struct registry *r, const char *site, const char *gateway,
                                   int64_t now_ms)
{
    const struct hubcfg_ingest *c = r->cfg;
    pthread_mutex_lock(&r->lock);
    struct gw *g = lookup(r, site, gateway, true);
    enum registry_admit v = REGISTRY_ADMIT;
    if (!g || (r->have_file && !g->listed)) {
        r->unregistered++;
        if (g && !g->unregistered_logged && r->n_unregistered_logged < LOG_UNREGISTERED) {
            LOGW("registry", g->key,
                 "not in the registry file: its telemetry is not admitted (not acknowledged: "
                 "its spool keeps it until it is registered)");
            g->unregistered_logged = true;
            r->n_unregistered_logged++;
        }
        pthread_mutex_unlock(&r->lock);
        return REGISTRY_UNREGISTERED;
    }
    if (now_ms > g->refill_ms) {
        g->tokens += (double)(now_ms - g->refill_ms) * (double)c->rate / 1000.0;
        if (g->tokens > (double)c->burst)
            g->tokens = (double)c->burst;
        g->refill_ms = now_ms;
    }
    if (g->tokens >= 1.0) {
        /* back within its quota once half the burst is there again: a flood
         * that goes on is one episode, not a line each refill */
        if (g->shedding && g->tokens >= (double)c->burst / 2) {
            LOGI("registry", g->key, "within its quota again: %" PRIu64 " messages were shed",
                 g->shed_episode);
            g->shedding = false;
        }
    } else {
        v = REGISTRY_SHED;
        g->shed++;
        r->shed++;
        g->changed = true;
        if (!g->shedding)
            LOGW("registry", g->key,
                 "over its quota (ingest.rate %" PRId64 " readings/s, burst %" PRId64
                 "): its messages are shed, not acknowledged (its spool keeps them)",
                 c->rate, c->burst);
        if (!g->shedding)
            g->shed_episode = 0;
        g->shedding = true;
        g->shed_ms = now_ms;
        g->shed_episode++;
    }
    pthread_mutex_unlock(&r->lock);
    return v;
}

/* Before a birth: device id passes if it is one of the first
 * devices_before_birth seen. Lock held. */
static bool early_ok(struct registry *r, struct gw *g, const char *id)
{
    for (size_t i = 0; i < g->n_early; i++)
        if (!strcmp(g->early[i], id))
            return true;
    if (g->n_early >= (size_t)r->cfg->devices_before_birth)
        return false;
    if (g->n_early == g->cap_early) {
        g->cap_early = g->cap_early ? 2 * g->cap_early : 8;
        g->early = ch_xrealloc(g->early, g->cap_early * sizeof *g->early);
    }
    ch_strlcpy(g->early[g->n_early++], id, CH_ID_MAX);
    return true;
}

/* Logs a refused device the first time, for the first REGISTRY_LOG_DEVICES
 * devices of the gateway. Lock held. */
static void name_refused(struct gw *g, const char *id)
{
    for (size_t i = 0; i < g->n_named; i++)
        if (!strcmp(g->named[i], id))
            return;
    if (g->n_named == REGISTRY_LOG_DEVICES) {
        if (!g->named_full)
            LOGW("registry", g->key,
                 "more devices not in its inventory: not named from now on (readings_refused "
                 "counts them)");
        g->named_full = true;
        return;
    }
    if (!g->named)
        g->named = ch_xcalloc(REGISTRY_LOG_DEVICES, sizeof *g->named);
    ch_strlcpy(g->named[g->n_named++], id, CH_ID_MAX);
    LOGW("registry", g->key,
         "device '%s' is not in its inventory (%zu devices): its readings are refused "
         "(acknowledged, not stored)",
         id, g->n_devs);
}

/* Over its quota now: shed a message recently. Lock held. */
static bool shedding(const struct gw *g, int64_t now)
{
    return g->shedding && now - g->shed_ms < SHEDDING_MS;
}

static enum registry_verdict judge(struct registry *r, struct gw *g, const char *id, int64_t now)
{
    if (!strcmp(id, g->gateway))
        return REGISTRY_ACCEPT; /* care-edge's own health: always declared */
    if (!g->born)
        return early_ok(r, g, id) ? REGISTRY_ACCEPT : REGISTRY_DEFER;
    const struct dev *d = dev_find(g, id);
    return d && d->until > now ? REGISTRY_ACCEPT : REGISTRY_REFUSE;
}

void registry_check(struct registry *r, const struct ch_telemetry *t, uint8_t *verdict)
{
    int64_t now = ch_mono_ms();
    pthread_mutex_lock(&r->lock);
    struct gw *g = lookup(r, t->site, t->gateway, true);
    uint64_t refused = 0, deferred = 0;
    for (size_t i = 0; i < t->n_readings; i++) {
        const char *id = t->readings[i].device;
        enum registry_verdict v = g ? judge(r, g, id, now) : REGISTRY_DEFER;
        verdict[i] = (uint8_t)v;
        if (v == REGISTRY_REFUSE) {
            refused++;
            name_refused(g, id);
        } else if (v == REGISTRY_DEFER) {
            deferred++;
            if (g && !g->defer_logged)
                LOGW("registry", g->key,
                     "no birth seen yet: device '%s' is beyond the %" PRId64
                     " allowed before one (ingest.devices_before_birth): readings of more "
                     "devices wait, not acknowledged, until its birth declares them",
                     id, r->cfg->devices_before_birth);
            if (g)
                g->defer_logged = true;
        }
    }
    if (g) {
        g->tokens -= (double)t->n_readings;
        g->refused += refused;
        g->deferred += deferred;
        g->changed = true;
    }
    r->refused += refused;
    r->deferred += deferred;
    pthread_mutex_unlock(&r->lock);
}

void registry_shed(struct registry *r, const char *site, const char *gateway)
{
    pthread_mutex_lock(&r->lock);
    struct gw *g = lookup(r, site, gateway, false);
    if (g) {
        g->shed++;
        g->changed = true;
    }
    r->shed++;
    pthread_mutex_unlock(&r->lock);
}

void registry_stored(struct registry *r, const char *site, const char *gateway, size_t n)
{
    pthread_mutex_lock(&r->lock);
    struct gw *g = lookup(r, site, gateway, false);
    if (g) {
        g->readings += n;
        g->changed = true;
    }
    pthread_mutex_unlock(&r->lock);
}

void registry_stats(struct registry *r, struct registry_stats *out)
{
    int64_t now = ch_mono_ms();
    pthread_mutex_lock(&r->lock);
    *out = (struct registry_stats){.readings_refused = r->refused,
                                   .readings_deferred = r->deferred,
                                   .messages_shed = r->shed,
                                   .messages_unregistered = r->unregistered,
                                   .gateways = r->n_gws};
    for (size_t i = 0; i < r->n_buckets; i++)
        for (struct gw *g = r->buckets[i]; g; g = g->next)
            out->gateways_shedding += shedding(g, now);
    pthread_mutex_unlock(&r->lock);
}

static int64_t clamp(uint64_t v)
{
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

size_t registry_report(struct registry *r, struct lp_buf *b, const char *hub, int64_t ts_ms)
{
    size_t n = 0;
    int64_t now = ch_mono_ms();
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_buckets; i++)
        for (struct gw *g = r->buckets[i]; g; g = g->next) {
            if (g->shedding && !shedding(g, now)) { /* it went quiet while shedding */
                g->shedding = false;
                g->changed = true;
            }
            if (!g->changed)
                continue;
            g->changed = false;
            lp_begin(b, "carehub_ingest");
            lp_tag(b, "gateway", g->gateway);
            lp_tag(b, "hub", hub);
            lp_tag(b, "site", g->site);
            lp_field_int(b, "readings", clamp(g->readings));
            lp_field_int(b, "readings_refused", clamp(g->refused));
            lp_field_int(b, "readings_deferred", clamp(g->deferred));
            lp_field_int(b, "messages_shed", clamp(g->shed));
            lp_field_int(b, "devices", (int64_t)g->n_devs);
            lp_field_bool(b, "born", g->born);
            lp_field_bool(b, "shedding", shedding(g, now));
            if (lp_end(b, ts_ms) == 0)
                n++;
        }
    pthread_mutex_unlock(&r->lock);
    return n;
}
