#include "ble_table.h"
#include "ble_dedup.h"
#include "err.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAC_BUCKETS         2048
#define PACKET_ID_WINDOW_MS 60000

struct metric_slot {
    char name[BLE_METRIC_NAME];
    double value;
    double held; /* latched value not yet returned by a poll */
    bool latch;
    bool pending;
};

struct wearable {
    bool used;
    char id[65];
    uint8_t mac[6];
    const struct ble_profile *profile;
    int next; /* MAC bucket chain, -1 end */
    struct ble_loc loc;
    int64_t last_heard_ms, last_reading_ms;
    int packet_id;           /* BTHome: the last packet's id, -1 none */
    int64_t out_of_range_ms; /* the table's unless set (ble_table_set_limits) */
    double battery_low;
    double zone_rssi;
    char ident[40];
    size_t nm;
    struct metric_slot m[BLE_MAX_METRICS];
};

struct ble_table {
    pthread_mutex_t lock;
    struct ble_table_opts o;
    const struct ble_zones *zones;
    struct ble_dedup *dedup;
    struct wearable *w;
    int bucket[MAC_BUCKETS];
    struct ble_table_stats st;
};

static unsigned mac_hash(const uint8_t mac[6])
{
    /* The low bytes of a MAC vary most between devices of one vendor. */
    uint32_t h = (uint32_t)mac[5] | (uint32_t)mac[4] << 8 | (uint32_t)mac[3] << 16;
    h ^= (uint32_t)mac[2] * 0x9E3779B1u;
    return (h * 0x85EBCA6Bu >> 16) & (MAC_BUCKETS - 1);
}

struct ble_table *ble_table_new(const struct ble_table_opts *opts, const struct ble_zones *zones)
{
    struct ble_table *t = ch_xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    if (opts)
        t->o = *opts;
    else
        t->o.battery_low = 20;
    if (t->o.dedup_window_ms <= 0)
        t->o.dedup_window_ms = 1000;
    if (t->o.out_of_range_ms <= 0)
        t->o.out_of_range_ms = 60000;
    if (t->o.max_wearables == 0)
        t->o.max_wearables = 1024;
    if (t->o.max_wearables > BLE_MAX_WEARABLES)
        t->o.max_wearables = BLE_MAX_WEARABLES;
    t->zones = zones;
    /* Slots for every copy of the last second of a full table, 8 x over. */
    t->dedup = ble_dedup_new(t->o.max_wearables * 8, t->o.dedup_window_ms);
    t->w = ch_xcalloc(t->o.max_wearables, sizeof *t->w);
    for (size_t i = 0; i < MAC_BUCKETS; i++)
        t->bucket[i] = -1;
    return t;
}

void ble_table_free(struct ble_table *t)
{
    if (!t)
        return;
    ble_dedup_free(t->dedup);
    free(t->w);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static struct wearable *find_mac(struct ble_table *t, const uint8_t mac[6])
{
    for (int i = t->bucket[mac_hash(mac)]; i >= 0; i = t->w[i].next)
        if (memcmp(t->w[i].mac, mac, 6) == 0)
            return &t->w[i];
    return NULL;
}

static struct wearable *find_id(struct ble_table *t, const char *id)
{
    for (size_t i = 0; i < t->o.max_wearables; i++)
        if (t->w[i].used && strcmp(t->w[i].id, id) == 0)
            return &t->w[i];
    return NULL;
}

int ble_table_add(struct ble_table *t, const char *id, const uint8_t mac[6],
                  const struct ble_profile *profile)
{
    if (!id || !*id || strlen(id) > 64)
        return CH_EINVAL;
    pthread_mutex_lock(&t->lock);
    int rc = CH_EFULL;
    if (find_mac(t, mac) || find_id(t, id)) {
        rc = CH_EINVAL;
        goto out;
    }
    for (size_t i = 0; i < t->o.max_wearables; i++) {
        struct wearable *w = &t->w[i];
        if (w->used)
            continue;
        memset(w, 0, sizeof *w);
        w->used = true;
        strcpy(w->id, id);
        memcpy(w->mac, mac, 6);
        w->profile = profile;
        w->packet_id = -1;
        w->out_of_range_ms = t->o.out_of_range_ms;
        w->battery_low = t->o.battery_low;
        ble_loc_init(&w->loc);
        unsigned b = mac_hash(mac);
        w->next = t->bucket[b];
        t->bucket[b] = (int)i;
        rc = 0;
        break;
    }
out:
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int ble_table_set_limits(struct ble_table *t, const char *id, int64_t out_of_range_ms,
                         double battery_low)
{
    pthread_mutex_lock(&t->lock);
    struct wearable *w = find_id(t, id);
    if (w) {
        w->out_of_range_ms = out_of_range_ms > 0 ? out_of_range_ms : t->o.out_of_range_ms;
        w->battery_low = battery_low;
    }
    pthread_mutex_unlock(&t->lock);
    return w ? 0 : CH_ENOTFOUND;
}

int ble_table_remove(struct ble_table *t, const char *id)
{
    pthread_mutex_lock(&t->lock);
    struct wearable *w = find_id(t, id);
    int rc = CH_ENOTFOUND;
    if (w) {
        int idx = (int)(w - t->w);
        int *pp = &t->bucket[mac_hash(w->mac)];
        while (*pp >= 0 && *pp != idx)
            pp = &t->w[*pp].next;
        if (*pp == idx)
            *pp = w->next;
        w->used = false;
        rc = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* Stores a reading's metrics as the wearable's latest values. */
static void apply_reading(struct wearable *w, const struct ble_reading *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct ble_metric *m = &r->m[i];
        struct metric_slot *s = NULL;
        for (size_t k = 0; k < w->nm; k++)
            if (strcmp(w->m[k].name, m->name) == 0) {
                s = &w->m[k];
                break;
            }
        if (!s) {
            if (w->nm >= BLE_MAX_METRICS)
                continue; /* bounded: a profile has at most BLE_MAX_FIELDS */
            s = &w->m[w->nm++];
            memset(s, 0, sizeof *s);
            strcpy(s->name, m->name);
        }
        s->value = m->value;
        s->latch = m->latch;
        if (m->latch && m->value != 0) {
            s->held = m->value;
            s->pending = true;
        }
    }
    if (r->ident[0])
        memcpy(w->ident, r->ident, sizeof w->ident);
}

/* What makes two copies "the same advertisement": the manufacturer and
 * service data, the AD structures that carry readings. Receivers differ in
 * the rest (OpenMQTTGateway forwards no flags, no name; a raw receiver may
 * append the scan response), so comparing whole payloads would count one
 * advertisement once per receiver format. A malformed payload is compared
 * whole. */
static size_t dedup_key(const struct ble_adv *a, uint8_t key[BLE_ADV_MAX])
{
    size_t pos = 0, n = 0, dlen;
    uint8_t type;
    const uint8_t *d;
    int r;
    while ((r = ble_ad_next(a->data, a->len, &pos, &type, &d, &dlen)) == 1)
        if (type == 0xFF || type == 0x16)
            ble_ad_append(key, &n, BLE_ADV_MAX, type, d, dlen);
    if (r < 0 || n == 0) {
        memcpy(key, a->data, a->len);
        return a->len;
    }
    return n;
}

static int feed_locked(struct ble_table *t, const struct ble_adv *a, int64_t now_ms)
{
    struct wearable *w = find_mac(t, a->mac);
    if (!w) {
        t->st.unknown_mac++;
        return CH_ENOTFOUND;
    }
    w->last_heard_ms = now_ms;
    if (t->zones) {
        int r = ble_zones_receiver(t->zones, a->receiver);
        if (r >= 0)
            ble_loc_observe(&w->loc, r, a->rssi, now_ms);
        else
            t->st.unknown_receiver++;
    }
    uint8_t key[BLE_ADV_MAX];
    size_t klen = dedup_key(a, key);
    if (ble_dedup_seen(t->dedup, a->mac, key, klen, now_ms)) {
        t->st.duplicates++;
        return 0;
    }
    if (t->zones)
        ble_loc_update(&w->loc, t->zones, now_ms, &w->zone_rssi);
    if (a->len == 0 || !w->profile)
        return 0;
    struct ble_reading r;
    int rc = ble_decode(w->profile, a->data, a->len, &r, NULL);
    if (rc == CH_ENOTFOUND) {
        t->st.no_match++;
        return 0;
    }
    if (rc == CH_EPROTO) {
        t->st.unsupported++;
        return 0;
    }
    if (rc != 0) {
        t->st.malformed++;
        return 0;
    }
    /* BTHome repeats a packet (a button press) for longer than the dedup
       window: the same packet id as the last one, within a minute of it, is
       the same packet (a device that restarted may reuse an id later) */
    for (size_t i = 0; i < r.n; i++) {
        double v = r.m[i].value;
        if (strcmp(r.m[i].name, "packet_id") != 0 || !(v >= 0 && v <= 255))
            continue;
        if ((int)v == w->packet_id && now_ms - w->last_reading_ms < PACKET_ID_WINDOW_MS) {
            t->st.duplicates++;
            return 0;
        }
        w->packet_id = (int)v;
    }
    if (r.truncated)
        t->st.truncated++;
    t->st.readings++;
    w->last_reading_ms = now_ms;
    apply_reading(w, &r);
    return 1;
}

int ble_table_feed(struct ble_table *t, const struct ble_adv *adv, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    int rc = feed_locked(t, adv, now_ms);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

struct ingest_ctx {
    struct ble_table *t;
    int64_t now_ms;
};

static void ingest_one(void *arg, const struct ble_adv *a)
{
    struct ingest_ctx *c = arg;
    feed_locked(c->t, a, c->now_ms);
}

int ble_table_ingest_rx(struct ble_table *t, enum ble_rx_format format, const char *topic,
                        const void *payload, size_t len, int64_t now_ms, struct ble_rx_stats *rx,
                        uint64_t *rejected)
{
    struct ingest_ctx c = {t, now_ms};
    if (!rx)
        rx = &t->st.rx;
    pthread_mutex_lock(&t->lock);
    int rc = ble_rx_parse(format, topic, payload, len, now_ms, rx, ingest_one, &c);
    if (rejected)
        *rejected = ble_rx_rejected_total(rx);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int ble_table_ingest(struct ble_table *t, enum ble_rx_format format, const char *topic,
                     const void *payload, size_t len, int64_t now_ms)
{
    return ble_table_ingest_rx(t, format, topic, payload, len, now_ms, NULL, NULL);
}

void ble_table_rx_stats(struct ble_table *t, const struct ble_rx_stats *rx,
                        struct ble_rx_stats *out)
{
    pthread_mutex_lock(&t->lock);
    *out = *rx;
    pthread_mutex_unlock(&t->lock);
}

static void put(struct ble_state *o, const char *name, double v)
{
    if (o->n < sizeof o->m / sizeof o->m[0]) {
        struct ble_metric *m = &o->m[o->n++];
        strcpy(m->name, name);
        m->value = v;
        m->latch = false;
    }
}

int ble_table_poll(struct ble_table *t, const char *id, int64_t now_ms, struct ble_state *out)
{
    pthread_mutex_lock(&t->lock);
    struct wearable *w = find_id(t, id);
    if (!w) {
        pthread_mutex_unlock(&t->lock);
        return CH_ENOTFOUND;
    }
    memset(out, 0, sizeof *out);
    strcpy(out->id, w->id);
    memcpy(out->mac, w->mac, 6);
    out->heard = w->last_heard_ms != 0;
    out->last_heard_ms = w->last_heard_ms;
    out->last_reading_ms = w->last_reading_ms;
    out->in_range = out->heard && now_ms - w->last_heard_ms < w->out_of_range_ms;
    out->zone = -1;
    if (t->zones) {
        out->zone = ble_loc_update(&w->loc, t->zones, now_ms, &w->zone_rssi);
        out->zone_id = ble_zones_id(t->zones, out->zone);
        out->zone_exit = ble_zones_is_exit(t->zones, out->zone);
    }
    memcpy(out->ident, w->ident, sizeof out->ident);
    const struct metric_slot *battery = NULL;
    for (size_t i = 0; i < w->nm; i++) {
        struct metric_slot *s = &w->m[i];
        struct ble_metric *m = &out->m[out->n++];
        strcpy(m->name, s->name);
        m->latch = s->latch;
        m->value = s->pending ? s->held : s->value;
        s->pending = false; /* returned once: the next poll shows the device's current value */
        if (strcmp(s->name, "battery") == 0)
            battery = s;
    }
    put(out, "in_range", out->in_range);
    if (out->zone >= 0) {
        put(out, "zone", out->zone);
        put(out, "zone_exit", out->zone_exit);
        put(out, "rssi", w->zone_rssi);
    }
    if (battery && w->battery_low >= 0)
        put(out, "battery_low", battery->value < w->battery_low);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void ble_table_stats(struct ble_table *t, struct ble_table_stats *out)
{
    pthread_mutex_lock(&t->lock);
    *out = t->st;
    pthread_mutex_unlock(&t->lock);
}
