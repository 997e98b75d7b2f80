#include "sim_home.h"

#include "ble_adv.h"
#include "sim_slave.h"
#include "sim_value.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Salts of the home's draws, apart from sim_value.c's. */
enum {
    SALT_RSSI = 40,
    SALT_MISS = 41,
    SALT_MEAL = 42,
    SALT_WALK_AT = 46,
    SALT_WALK_ZONE = 47,
    SALT_PHASE = 48
};

#define TRANSIT_STEPS 4 /* longest way between two routine zones, in zones passed */
#define MEAL_LEN_S    (40 * 60)
#define WALK_LEN_S    (40 * 60)
#define MINEW_MAX     (60 * 1024) /* below the edge's 64 KiB bound on one message */

struct wearable {
    const struct sim_wearable_conf *conf;
    uint64_t key, bed_key;
    struct sim_set *sets[SIM_WEAR_METRICS];
    size_t nsets[SIM_WEAR_METRICS];
    struct sim_walk *walks;
    size_t nwalks;
    int64_t next_ms; /* monotonic */
    uint64_t k;      /* advertisements sent */
};

struct receiver {
    const struct sim_receiver_conf *conf;
    uint64_t key;
    struct sim_fault_ev *faults;
    size_t nfaults;
    char *buf; /* minew, ingics: the upload being gathered */
    size_t len, cap, entries;
    int64_t next_ms;
};

struct bed {
    const struct sim_wifi_bed_conf *conf;
    struct sim_slave *slave;
    int64_t next_ms;
};

struct sim_home {
    const struct sim_config *cfg;
    struct wearable *w;
    struct receiver *rx;
    struct bed *beds;
    /* shortest paths between zones: hops (-1 unreachable) and the next zone */
    int dist[SIM_MAX_ZONES][SIM_MAX_ZONES];
    uint8_t next[SIM_MAX_ZONES][SIM_MAX_ZONES];
    bool started;
    struct sim_home_stats stats;
};

bool sim_home_wanted(const struct sim_config *cfg)
{
    return cfg->nwearables || cfg->nreceivers || cfg->nwifi_beds;
}

/* Breadth-first search from every zone: zone graphs are small (<= 64). */
static void paths_build(struct sim_home *h)
{
    size_t n = h->cfg->nzones;
    for (size_t a = 0; a < n; a++) {
        size_t queue[SIM_MAX_ZONES], head = 0, tail = 0;
        for (size_t z = 0; z < n; z++)
            h->dist[a][z] = -1;
        /* next[a][z]: first step from a towards z, found by searching from z
         * backwards is the same as from a forwards on a symmetric graph */
        h->dist[a][a] = 0;
        h->next[a][a] = (uint8_t)a;
        queue[tail++] = a;
        while (head < tail) {
            size_t u = queue[head++];
            for (size_t v = 0; v < n; v++) {
                if (!h->cfg->zones[u].adjacent[v] || h->dist[a][v] >= 0)
                    continue;
                h->dist[a][v] = h->dist[a][u] + 1;
                h->next[a][v] = u == a ? (uint8_t)v : h->next[a][u];
                queue[tail++] = v;
            }
        }
    }
}

/* The zone i steps along the shortest way from a to b (b itself when i
 * reaches it, or when there is no way: the resident then simply is there). */
static size_t step(const struct sim_home *h, size_t a, size_t b, int i)
{
    if (h->dist[a][b] < 0 || i >= h->dist[a][b])
        return b;
    for (; i > 0; i--)
        a = h->next[a][b];
    return a;
}

struct sim_home *sim_home_new(const struct sim_config *cfg)
{
    struct sim_home *h = ch_xcalloc(1, sizeof *h);
    h->cfg = cfg;
    paths_build(h);
    h->w = ch_xcalloc(cfg->nwearables, sizeof *h->w);
    for (size_t i = 0; i < cfg->nwearables; i++) {
        struct wearable *w = &h->w[i];
        w->conf = &cfg->wearables[i];
        w->key = sim_value_key(w->conf->mac_str);
        /* the bracelet's wearer sleeps when their bed sensor says so */
        w->bed_key = sim_value_key(w->conf->bed >= 0 ? cfg->wifi_beds[w->conf->bed].name
                                                     : w->conf->resident);
    }
    h->rx = ch_xcalloc(cfg->nreceivers, sizeof *h->rx);
    for (size_t i = 0; i < cfg->nreceivers; i++) {
        h->rx[i].conf = &cfg->receivers[i];
        h->rx[i].key = sim_value_key(cfg->receivers[i].id);
    }
    const struct sim_model *bed_mb = sim_model_find("bed-mb");
    h->beds = ch_xcalloc(cfg->nwifi_beds, sizeof *h->beds);
    for (size_t i = 0; i < cfg->nwifi_beds; i++) {
        h->beds[i].conf = &cfg->wifi_beds[i];
        h->beds[i].slave =
            sim_slave_new(cfg->wifi_beds[i].name, 1, bed_mb, cfg->seed, cfg->utc_offset_min);
    }
    for (size_t i = 0; i < cfg->nevents; i++) { /* sorted by time, as the lists need */
        const struct sim_event_conf *ev = &cfg->events[i];
        if (ev->target == SIM_TARGET_WEARABLE) {
            struct wearable *w = &h->w[ev->slave];
            if (ev->kind == SIM_EVENT_WALK) {
                w->walks = ch_xrealloc(w->walks, (w->nwalks + 1) * sizeof *w->walks);
                w->walks[w->nwalks++] = ev->walk;
            } else {
                size_t m = ev->metric;
                w->sets[m] = ch_xrealloc(w->sets[m], (w->nsets[m] + 1) * sizeof *w->sets[m]);
                w->sets[m][w->nsets[m]++] = ev->set;
            }
        } else if (ev->target == SIM_TARGET_RECEIVER) {
            struct receiver *r = &h->rx[ev->slave];
            r->faults = ch_xrealloc(r->faults, (r->nfaults + 1) * sizeof *r->faults);
            r->faults[r->nfaults++] = ev->fault;
        } else if (ev->target == SIM_TARGET_WIFI_BED) {
            if (ev->kind == SIM_EVENT_FAULT)
                sim_slave_add_fault(h->beds[ev->slave].slave, &ev->fault);
            else
                sim_slave_add_set(h->beds[ev->slave].slave, ev->metric, &ev->set);
        }
    }
    return h;
}

void sim_home_free(struct sim_home *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->cfg->nwearables; i++) {
        for (size_t m = 0; m < SIM_WEAR_METRICS; m++)
            free(h->w[i].sets[m]);
        free(h->w[i].walks);
    }
    for (size_t i = 0; i < h->cfg->nreceivers; i++) {
        free(h->rx[i].faults);
        free(h->rx[i].buf);
    }
    for (size_t i = 0; i < h->cfg->nwifi_beds; i++)
        sim_slave_free(h->beds[i].slave);
    free(h->w);
    free(h->rx);
    free(h->beds);
    free(h);
}

/* ---- where residents are ---------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* The pattern's zone at Unix time t_ms, without the way between zones. */
static size_t pattern_zone(const struct sim_home *h, const struct wearable *w, int64_t t_ms)
{
    const struct sim_config *c = h->cfg;
    struct sim_bed bed;
    sim_value_bed(c->seed, w->bed_key, t_ms, c->utc_offset_min, &bed);
    if (bed.in_bed)
        return w->conf->home;
    int64_t local_s = floor_div(t_ms, 1000) + (int64_t)c->utc_offset_min * 60;
    int64_t day = floor_div(local_s, 86400), sec = local_s - day * 86400;
    if (c->routine.dining >= 0) {
        static const int64_t meals[] = {7 * 3600 + 1800, 11 * 3600 + 2400, 17 * 3600 + 1800};
        for (size_t i = 0; i < CH_ARRAY_LEN(meals); i++) {
            int64_t at = meals[i] +
                         (int64_t)(600.0 * sim_value_noise(c->seed, w->key, 0, SALT_MEAL + i, day));
            if (sec >= at && sec < at + MEAL_LEN_S)
                return (size_t)c->routine.dining;
        }
    }
    if (c->routine.nwalk) {
        int64_t at =
            15 * 3600 +
            (int64_t)(1800.0 * (1.0 + sim_value_noise(c->seed, w->key, 0, SALT_WALK_AT, day)));
        if (sec >= at && sec < at + WALK_LEN_S) {
            double u = (sim_value_noise(c->seed, w->key, 0, SALT_WALK_ZONE, day) + 1.0) / 2.0;
            size_t k = (size_t)(u * (double)c->routine.nwalk);
            return c->routine.walk[k < c->routine.nwalk ? k : c->routine.nwalk - 1];
        }
    }
    return w->conf->home;
}

/* The pattern with the way between zones: looking back a minute at a time,
 * the first change found says how far along the way the resident is. */
static size_t routine_zone(const struct sim_home *h, const struct wearable *w, int64_t t_ms)
{
    size_t cur = pattern_zone(h, w, t_ms);
    for (int j = 1; j <= TRANSIT_STEPS; j++) {
        size_t before = pattern_zone(h, w, t_ms - (int64_t)j * SIM_TRANSIT_MS);
        if (before != cur)
            return step(h, before, cur, j);
    }
    return cur;
}

size_t sim_home_routine_zone(const struct sim_home *h, size_t w, int64_t t_ms)
{
    return routine_zone(h, &h->w[w], t_ms);
}

/* Where the first k walks (in force at at_ms) put the resident. A walk
 * starts where the resident was when it began: the same question with one
 * walk fewer, as deep as a chain of walks. */
static size_t walked_zone(const struct sim_home *h, const struct wearable *w, size_t k,
                          int64_t start_ms, int64_t at_ms)
{
    if (k == 0 || w->walks[k - 1].release)
        return routine_zone(h, w, start_ms + at_ms);
    const struct sim_walk *e = &w->walks[k - 1];
    size_t from = walked_zone(h, w, k - 1, start_ms, e->at_ms);
    int hops = h->dist[from][e->to];
    int64_t into = at_ms - e->at_ms;
    if (hops <= 0 || into >= e->over_ms)
        return e->to;
    /* each zone on the way, the start included, gets an equal share */
    return step(h, from, e->to, (int)(into * hops / e->over_ms));
}

/* Since when a bracelet has been off the wrist at at_ms, or -1 if it is
 * worn: the event in force on `worn` that took it off. */
static int64_t off_since(const struct wearable *w, int64_t at_ms)
{
    const struct sim_set *s = w->sets[SIM_WEAR_WORN];
    for (size_t k = w->nsets[SIM_WEAR_WORN]; k > 0; k--) {
        const struct sim_set *e = &s[k - 1];
        if (e->at_ms > at_ms)
            continue;
        if (e->kind == SIM_SET_PULSE && at_ms - e->at_ms >= e->over_ms)
            continue; /* over: the one before decides */
        if (e->kind == SIM_SET_RELEASE)
            return -1;
        return e->value < 0.5 ? e->at_ms : -1;
    }
    return -1;
}

size_t sim_home_zone(const struct sim_home *h, size_t wi, int64_t start_ms, int64_t at_ms)
{
    const struct wearable *w = &h->w[wi];
    /* a bracelet taken off lies where its wearer was at that moment */
    int64_t off = off_since(w, at_ms);
    int64_t t = off >= 0 ? off : at_ms;
    size_t k = w->nwalks;
    while (k > 0 && w->walks[k - 1].at_ms > t)
        k--;
    return walked_zone(h, w, k, start_ms, t);
}

/* ---- what bracelets say ----------------------------------------------- */

struct base_ctx {
    const struct sim_home *h;
    const struct wearable *w;
    size_t metric;
    int64_t start_ms;
};

static double wear_base(const void *ctx, int64_t at_ms)
{
    const struct base_ctx *b = ctx;
    const struct sim_config *c = b->h->cfg;
    switch (b->metric) {
    case SIM_WEAR_BATTERY:
        return b->w->conf->battery;
    case SIM_WEAR_HR:
        /* the configured resting rate with the curve's daily swing and noise */
        return sim_value_at(sim_wearable_metrics[SIM_WEAR_HR], c->seed, b->w->key,
                            b->start_ms + at_ms, c->utc_offset_min) +
               (b->w->conf->hr - sim_wearable_metrics[SIM_WEAR_HR]->base);
    case SIM_WEAR_WORN:
        return 1.0;
    default:
        return 0.0; /* SOS, fall: until pressed or detected */
    }
}

void sim_home_wearable_values(const struct sim_home *h, size_t wi, int64_t start_ms, int64_t at_ms,
                              double *v)
{
    const struct wearable *w = &h->w[wi];
    for (size_t m = 0; m < SIM_WEAR_METRICS; m++) {
        struct base_ctx ctx = {h, w, m, start_ms};
        double x = sim_scenario_value(w->sets[m], w->nsets[m], at_ms, wear_base, &ctx);
        const struct sim_metric *mt = sim_wearable_metrics[m];
        v[m] = x < mt->min ? mt->min : x > mt->max ? mt->max : x;
    }
    /* off the wrist, the optical sensor sees no pulse */
    if (v[SIM_WEAR_WORN] < 0.5 &&
        !sim_scenario_held(w->sets[SIM_WEAR_HR], w->nsets[SIM_WEAR_HR], at_ms))
        v[SIM_WEAR_HR] = 0.0;
}

void sim_home_mfr_data(const double *v, uint8_t out[5])
{
    out[0] = 0xFF; /* company 0xFFFF, little endian */
    out[1] = 0xFF;
    out[2] = (uint8_t)lround(v[SIM_WEAR_BATTERY]);
    out[3] = (uint8_t)((v[SIM_WEAR_SOS] >= 0.5 ? 0x01 : 0) | (v[SIM_WEAR_FALL] >= 0.5 ? 0x02 : 0) |
                       (v[SIM_WEAR_WORN] >= 0.5 ? 0x04 : 0));
    long hr = lround(v[SIM_WEAR_HR]);
    out[4] = (uint8_t)(hr < 0 ? 0 : hr > 255 ? 255 : hr);
}

bool sim_home_rssi(const struct sim_home *h, size_t wi, size_t rx, size_t zone, uint64_t k,
                   int *rssi)
{
    const struct sim_config *c = h->cfg;
    size_t rz = h->rx[rx].conf->zone;
    bool same = rz == zone;
    if (!same && !c->zones[zone].adjacent[rz])
        return false;
    uint64_t wk = h->w[wi].key, rk = h->rx[rx].key;
    /* through a wall or a doorway some advertisements are lost */
    if (!same && sim_value_noise(c->seed, wk, rk, SALT_MISS, (int64_t)k) < -0.8)
        return false;
    double n = sim_value_noise(c->seed, wk, rk, SALT_RSSI, (int64_t)k);
    *rssi = (same ? SIM_RSSI_SAME : SIM_RSSI_ADJACENT) + (int)lround(4.0 * n);
    return true;
}

bool sim_home_receiver_silent(const struct sim_home *h, size_t rx, int64_t at_ms)
{
    const struct sim_fault_ev *f = sim_scenario_fault(h->rx[rx].faults, h->rx[rx].nfaults, at_ms);
    return f && f->fault == SIM_FAULT_SILENT;
}

size_t sim_home_bed_json(const struct sim_home *h, size_t b, int64_t start_ms, int64_t at_ms,
                         char *buf, size_t n)
{
    const struct sim_slave *s = h->beds[b].slave;
    if (sim_slave_fault(s, at_ms) == SIM_FAULT_SILENT)
        return 0;
    double v[SIM_MODEL_MAX_METRICS];
    sim_slave_values(s, start_ms, at_ms, v);
    /* bed-mb's metrics: in_bed, hr, rr, movement, presence; the sensor
     * reports whole beats and breaths, as the Modbus one does */
    int len = snprintf(buf, n,
                       "{\"bed\":{\"occupied\":%s},\"vitals\":{\"heart\":%ld,\"breath\":%ld},"
                       "\"motion\":%ld,\"presence\":%s}",
                       v[0] >= 0.5 ? "true" : "false", lround(v[1]), lround(v[2]), lround(v[3]),
                       v[4] >= 0.5 ? "true" : "false");
    return len > 0 && (size_t)len < n ? (size_t)len : 0;
}

/* ---- sending ---------------------------------------------------------- */

/* lower: OpenMQTTGateway writes lower case hex, the gateways upper case */
static void hex(const uint8_t *p, size_t n, bool lower, char *out)
{
    const char *digits = lower ? "0123456789abcdef" : "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void buf_add(struct receiver *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->buf = ch_xrealloc(r->buf, r->cap);
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

static void flush(struct sim_home *h, struct receiver *r, sim_publish_fn publish, void *ctx)
{
    if (r->entries == 0)
        return;
    if (r->conf->format == SIM_RX_MINEW)
        buf_add(r, "]", 1);
    publish(ctx, r->conf->topic, r->buf, r->len);
    h->stats.messages++;
    r->len = 0;
    r->entries = 0;
}

/* One reception of advertisement adv (AD structures, flags first) of
 * wearable w by receiver r at rssi, in r's format. */
static void hear(struct sim_home *h, struct receiver *r, const struct wearable *w, int rssi,
                 const uint8_t *adv, size_t len, sim_publish_fn publish, void *ctx)
{
    char mac12[13], data[2 * 31 + 1], line[256];
    int n;
    ble_mac_format(w->conf->mac, mac12);
    h->stats.heard++;
    switch (r->conf->format) {
    case SIM_RX_OMG: {
        /* OpenMQTTGateway gives the manufacturer data without its AD header */
        char topic[256];
        hex(adv + 5, len - 5, true, data);
        snprintf(topic, sizeof topic, "%s/%s", r->conf->topic, mac12);
        n = snprintf(line, sizeof line, "{\"id\":\"%s\",\"rssi\":%d,\"manufacturerdata\":\"%s\"}",
                     w->conf->mac_str, rssi, data);
        publish(ctx, topic, line, (size_t)n);
        h->stats.messages++;
        return;
    }
    case SIM_RX_MINEW:
        hex(adv, len, false, data);
        if (r->len > MINEW_MAX)
            return; /* a full upload: the gateway's buffer drops, as real ones do */
        if (r->entries == 0) {
            n = snprintf(line, sizeof line, "[{\"type\":\"Gateway\",\"mac\":\"%s\"}", r->conf->id);
            buf_add(r, line, (size_t)n);
        }
        n = snprintf(line, sizeof line,
                     ",{\"type\":\"Unknown\",\"mac\":\"%s\",\"bleName\":\"\",\"rssi\":%d,"
                     "\"rawData\":\"%s\"}",
                     mac12, rssi, data);
        buf_add(r, line, (size_t)n);
        r->entries++;
        return;
    case SIM_RX_INGICS: {
        uint8_t gw[6];
        char gw12[13];
        ble_mac_parse(r->conf->id, strlen(r->conf->id), gw); /* checked by the config */
        ble_mac_format(gw, gw12);
        hex(adv, len, false, data);
        if (r->len > MINEW_MAX)
            return;
        n = snprintf(line, sizeof line, "%s$GPRP,%s,%s,%d,%s", r->entries ? "\n" : "", mac12, gw12,
                     rssi, data);
        buf_add(r, line, (size_t)n);
        r->entries++;
        return;
    }
    }
}

static void advertise(struct sim_home *h, size_t wi, int64_t start_ms, int64_t at_ms,
                      sim_publish_fn publish, void *ctx)
{
    struct wearable *w = &h->w[wi];
    double v[SIM_WEAR_METRICS];
    sim_home_wearable_values(h, wi, start_ms, at_ms, v);
    if (v[SIM_WEAR_BATTERY] < 0.5)
        return; /* flat: the radio is off */
    uint64_t k = w->k++;
    h->stats.advs++;
    /* AD flags (LE general discoverable, no BR/EDR), then manufacturer data */
    uint8_t adv[3 + 2 + 5] = {0x02, 0x01, 0x06, 0x06, 0xFF};
    sim_home_mfr_data(v, adv + 5);
    size_t zone = sim_home_zone(h, wi, start_ms, at_ms);
    for (size_t r = 0; r < h->cfg->nreceivers; r++) {
        int rssi;
        if (sim_home_receiver_silent(h, r, at_ms) || !sim_home_rssi(h, wi, r, zone, k, &rssi))
            continue;
        hear(h, &h->rx[r], w, rssi, adv, sizeof adv, publish, ctx);
    }
}

/* A fixed phase per device inside its interval, so a home's devices do not
 * all send in the same millisecond. */
static int64_t phase(const struct sim_home *h, uint64_t key, int64_t interval)
{
    double u = (sim_value_noise(h->cfg->seed, key, 0, SALT_PHASE, 0) + 1.0) / 2.0;
    return (int64_t)(u * (double)interval);
}

/* The next due time after one that has just passed; a loop that fell
 * behind skips, rather than bursts, what it missed. */
static int64_t advance(int64_t due, int64_t interval, int64_t now)
{
    due += interval;
    return due <= now ? now + interval : due;
}

int64_t sim_home_step(struct sim_home *h, int64_t mono_ms, int64_t start_ms, int64_t at_ms,
                      sim_publish_fn publish, void *ctx)
{
    const struct sim_config *c = h->cfg;
    if (!h->started) {
        h->started = true;
        for (size_t i = 0; i < c->nwearables; i++)
            h->w[i].next_ms = mono_ms + phase(h, h->w[i].key, c->wearables[i].interval_ms);
        for (size_t i = 0; i < c->nreceivers; i++)
            h->rx[i].next_ms = mono_ms + c->receivers[i].interval_ms;
        for (size_t i = 0; i < c->nwifi_beds; i++)
            h->beds[i].next_ms = mono_ms + phase(h, sim_value_key(c->wifi_beds[i].name),
                                                 c->wifi_beds[i].interval_ms);
    }
    int64_t next = mono_ms + 1000;
    for (size_t i = 0; i < c->nwearables; i++) {
        struct wearable *w = &h->w[i];
        if (w->next_ms <= mono_ms) {
            advertise(h, i, start_ms, at_ms, publish, ctx);
            w->next_ms = advance(w->next_ms, w->conf->interval_ms, mono_ms);
        }
        if (w->next_ms < next)
            next = w->next_ms;
    }
    for (size_t i = 0; i < c->nreceivers; i++) {
        struct receiver *r = &h->rx[i];
        if (r->conf->format == SIM_RX_OMG)
            continue; /* sends as it hears */
        if (r->next_ms <= mono_ms) {
            flush(h, r, publish, ctx);
            r->next_ms = advance(r->next_ms, r->conf->interval_ms, mono_ms);
        }
        if (r->next_ms < next)
            next = r->next_ms;
    }
    for (size_t i = 0; i < c->nwifi_beds; i++) {
        struct bed *b = &h->beds[i];
        if (b->next_ms <= mono_ms) {
            char json[256];
            size_t n = sim_home_bed_json(h, i, start_ms, at_ms, json, sizeof json);
            if (n) {
                publish(ctx, b->conf->topic, json, n);
                h->stats.messages++;
                h->stats.beds++;
            }
            b->next_ms = advance(b->next_ms, b->conf->interval_ms, mono_ms);
        }
        if (b->next_ms < next)
            next = b->next_ms;
    }
    return next;
}

const struct sim_home_stats *sim_home_stats(const struct sim_home *h)
{
    return &h->stats;
}
