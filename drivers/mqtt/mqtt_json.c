/* Devices that publish JSON to an MQTT broker on the site LAN (Wi-Fi bed
 * sensors and the like): bus type `mqtt` (host, port of the broker), each
 * device with its `topic`, its profile (`protocol: mqtt-json`) mapping JSON
 * fields to metrics:
 *
 *   metrics:
 *     - {metric: hr, field: vitals.heart, unit: bpm}
 *     - {metric: in_bed, field: bed.occupied}          # true/false -> 1/0
 *     - {metric: temperature, field: t, scale: 0.1}
 *
 * The devices push, and so does the driver (start): every message is
 * decoded on Paho's thread as it arrives and handed on as one reading with
 * the fields it carried, stamped with its arrival time; none is dropped or
 * merged with the next. The device's interval is only its liveness clock:
 * a poll says CH_ENODATA while it is heard and CH_ETIMEOUT once it has been
 * silent for three intervals, so the scheduler reports it offline. A
 * payload that is not JSON, or has none of the profile's fields, is
 * rejected, logged (the first, then every 100th) and counted.
 *
 * A bus's devices are its state (attach, prepare); at open they are indexed
 * by topic in a hash table, and the bus subscribes to their topics on every
 * (re)connect. */
#include "driver.h"
#include "err.h"
#include "log.h"
#include "mqtt_json.h"
#include "mqtt_link.h"
#include "util.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD              "mqtt-json"
#define SILENT_INTERVALS 3
#define PAYLOAD_MAX      65536

struct mj_dev {
    const struct device_cfg *cfg;
    uint64_t topic_hash;
    struct mj_dev *next; /* the next device in its hash slot */
    /* Paho's thread only */
    double *values;
    bool *have;
    uint64_t rejected;
    /* monotonic arrival of the last good message, 0 none; read by poll */
    _Atomic int64_t last_mono;
};

/* A bus's devices (attach): prepare adds, release removes, open indexes
 * them by topic. One thread prepares, releases and opens; Paho's thread only
 * reads the index, which open built before connecting. */
struct mj_line {
    size_t n;
    struct mj_dev **devs;
    size_t mask; /* slots - 1: a power of two at least twice n */
    struct mj_dev **slots;
};

struct mj_bus {
    const struct bus_cfg *cfg;
    struct mj_line *line;
    MQTTAsync client;
    const struct drv_emit *emit;
    _Atomic int64_t opened_mono;
};

static void *mj_attach(const struct bus_cfg *bus, void **shared)
{
    (void)bus;
    (void)shared;
    return ch_xcalloc(1, sizeof(struct mj_line));
}

static void mj_detach(void *state)
{
    struct mj_line *line = state;
    free(line->devs);
    free(line->slots);
    free(line);
}

static int mj_prepare(void *state, const struct bus_cfg *bus, const struct device_cfg *dev,
                      void **dev_ctx)
{
    (void)bus;
    struct mj_line *line = state;
    const struct profile *p = dev->prof;
    if (p->protocol != PROTO_MQTT_JSON) {
        cfg_report(dev->node, "profile",
                   "key 'profile': '%s' does not describe JSON over MQTT (protocol: mqtt-json), "
                   "the only kind of device an mqtt bus has",
                   p->id);
        return CH_ECONFIG;
    }
    if (!dev->topic || !*dev->topic || strpbrk(dev->topic, "+#")) {
        cfg_report(dev->node, "topic", "key 'topic': a topic without wildcards is needed");
        return CH_ECONFIG;
    }
    struct mj_dev *d = ch_xcalloc(1, sizeof *d);
    d->cfg = dev;
    d->topic_hash = ch_fnv1a(CH_FNV1A_INIT, dev->topic, strlen(dev->topic));
    d->values = ch_xcalloc(p->metrics.n + 1, sizeof *d->values);
    d->have = ch_xcalloc(p->metrics.n + 1, sizeof *d->have);
    line->devs = ch_xrealloc(line->devs, (line->n + 1) * sizeof *line->devs);
    line->devs[line->n++] = d;
    *dev_ctx = d;
    return 0;
}

static void mj_release(void *state, void *dev_ctx)
{
    struct mj_line *line = state;
    struct mj_dev *d = dev_ctx;
    if (!d)
        return;
    for (size_t i = 0; i < line->n; i++)
        if (line->devs[i] == d)
            line->devs[i] = line->devs[--line->n];
    free(line->slots); /* indexed again at the next open */
    line->slots = NULL;
    free(d->values);
    free(d->have);
    free(d);
}

/* Indexes the line's devices by topic (several devices may share one). */
static void mj_index(struct mj_line *line)
{
    size_t n = 16;
    while (n < 2 * line->n)
        n *= 2;
    free(line->slots);
    line->slots = ch_xcalloc(n, sizeof *line->slots);
    line->mask = n - 1;
    for (size_t i = line->n; i-- > 0;) { /* configuration order within a slot */
        struct mj_dev *d = line->devs[i];
        struct mj_dev **slot = &line->slots[d->topic_hash & line->mask];
        d->next = *slot;
        *slot = d;
    }
}

/* The value at a dotted path ("vitals.heart") of an object; NULL if none. */
static json_t *field_at(json_t *root, const char *path)
{
    json_t *v = root;
    char key[128];
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n == 0 || n >= sizeof key || !json_is_object(v))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (dot ? 1 : 0);
    }
    return v;
}

const char *mqtt_json_decode(const struct profile *p, const char *payload, size_t len,
                             double *values, bool *have, char *why, size_t n)
{
    if (len > PAYLOAD_MAX) {
        snprintf(why, n, "payload of %zu bytes is over %d", len, PAYLOAD_MAX);
        return why;
    }
    json_error_t je;
    json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(why, n, "not JSON: %.100s", je.text);
        return why;
    }
    size_t found = 0;
    for (size_t i = 0; i < p->metrics.n; i++) {
        const struct metric_def *m = PROFILE_METRIC(p, i);
        json_t *v = field_at(root, m->field);
        double x;
        if (json_is_number(v))
            x = json_number_value(v);
        else if (json_is_boolean(v))
            x = json_is_true(v) ? 1 : 0;
        else
            continue; /* absent this time: the metric keeps no value in this reading */
        x = x * m->scale + m->offset;
        if (!isfinite(x))
            continue;
        values[i] = x;
        have[i] = true;
        found++;
    }
    json_decref(root);
    if (!found) {
        snprintf(why, n, "none of profile %s's fields is in it", p->id);
        return why;
    }
    /* only what this message carried counts as new */
    return NULL;
}

/* Decodes one message for device d and hands it on as a reading, or
 * counts and logs why it was rejected. Paho's thread. */
static void deliver(struct mj_bus *b, struct mj_dev *d, const char *topic,
                    const MQTTAsync_message *msg)
{
    const struct profile *p = d->cfg->prof;
    char why[160];
    memset(d->have, 0, p->metrics.n * sizeof *d->have);
    const char *bad = mqtt_json_decode(p, msg->payload, (size_t)msg->payloadlen, d->values, d->have,
                                       why, sizeof why);
    if (bad) {
        d->rejected++;
        if (d->rejected == 1 || d->rejected % 100 == 0)
            LOGW(MOD, d->cfg->id, "message on %s rejected (%llu so far): %s", topic,
                 (unsigned long long)d->rejected, bad);
        b->emit->rejected(b->emit->ctx, d->cfg);
        return;
    }
    struct ch_reading r = {.ts_ms = ch_now_ms(), .quality = CH_Q_GOOD};
    r.metrics = ch_xcalloc(p->metrics.n + 1, sizeof *r.metrics);
    for (size_t i = 0; i < p->metrics.n; i++) {
        if (!d->have[i])
            continue;
        const struct metric_def *m = PROFILE_METRIC(p, i);
        struct ch_metric *cm = &r.metrics[r.n_metrics++];
        ch_strlcpy(cm->name, m->metric, sizeof cm->name);
        ch_strlcpy(cm->unit, m->unit ? m->unit : "", sizeof cm->unit);
        cm->value = d->values[i];
    }
    atomic_store(&d->last_mono, ch_mono_ms());
    b->emit->reading(b->emit->ctx, d->cfg, &r);
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    struct mj_bus *b = ctx;
    size_t len = tlen > 0 ? (size_t)tlen : strlen(topic);
    uint64_t h = ch_fnv1a(CH_FNV1A_INIT, topic, len);
    for (struct mj_dev *d = b->line->slots[h & b->line->mask]; d; d = d->next)
        if (d->topic_hash == h && strlen(d->cfg->topic) == len &&
            memcmp(d->cfg->topic, topic, len) == 0)
            deliver(b, d, d->cfg->topic, msg);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct mj_bus *b = ctx;
    LOGI(MOD, b->cfg->id, "connected to %s:%lld", b->cfg->host, (long long)b->cfg->port);
    for (size_t i = 0; i < b->line->n; i++) {
        const char *topic = b->line->devs[i]->cfg->topic;
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        int rc = MQTTAsync_subscribe(b->client, topic, 1, &ro);
        if (rc != MQTTASYNC_SUCCESS)
            LOGW(MOD, b->line->devs[i]->cfg->id, "cannot subscribe to %s: %s", topic,
                 MQTTAsync_strerror(rc));
    }
}

static void on_lost(void *ctx, char *cause)
{
    struct mj_bus *b = ctx;
    LOGW(MOD, b->cfg->id, "connection lost%s%s; reconnecting", cause ? ": " : "",
         cause ? cause : "");
}

static int mj_open(void *state, const struct bus_cfg *bus, void **bus_ctx)
{
    struct mj_bus *b = ch_xcalloc(1, sizeof *b);
    b->cfg = bus;
    b->line = state;
    mj_index(b->line);
    *bus_ctx = b;
    return 0;
}

/* Connects: from here Paho's thread delivers to emit. */
static int mj_start(void *bus_ctx, const struct drv_emit *emit)
{
    struct mj_bus *b = bus_ctx;
    b->emit = emit;
    char uri[300], cid[200];
    snprintf(uri, sizeof uri, "tcp://%s:%lld", b->cfg->host, (long long)b->cfg->port);
    snprintf(cid, sizeof cid, "carehub-edge-%s-%ld", b->cfg->id, (long)getpid());
    struct mqtt_link_cbs cbs = {
        .ctx = b, .on_message = on_message, .on_lost = on_lost, .on_connected = on_connected};
    /* the silence clock of every device starts now */
    atomic_store(&b->opened_mono, ch_mono_ms());
    return mqtt_link_open(uri, cid, NULL, NULL, &cbs, &b->client);
}

static void mj_close(void *bus_ctx)
{
    struct mj_bus *b = bus_ctx;
    if (!b)
        return;
    if (b->client)
        mqtt_link_close(&b->client); /* no callback runs after this */
    free(b);
}

/* Liveness only: the readings went out as they came (start). */
static int mj_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    (void)out;
    (void)stats;
    struct mj_bus *b = bus_ctx;
    struct mj_dev *d = dev_ctx;
    int64_t last = atomic_load(&d->last_mono);
    if (!last)
        last = atomic_load(&b->opened_mono);
    return ch_mono_ms() - last > SILENT_INTERVALS * dev->interval_ms ? CH_ETIMEOUT : CH_ENODATA;
}

#define B(k) offsetof(struct bus_cfg, k)
/* clang-format off */
static const struct cfg_key mj_keys[] = {
    {.key = "host", .type = CFG_STR, .offset = B(host), .required = true},
    {.key = "port", .type = CFG_INT, .offset = B(port), .def = "1883", .min = 1, .max = 65535},
    CFG_END,
};
/* clang-format on */
#undef B

static const struct driver_bus_type mj_bus_types[] = {{BUS_MQTT, "mqtt", mj_keys, DRV_ADDR_TOPIC},
                                                      {0}};

/* Each metric says where it is in the device's JSON. */
static int mj_check_profile(struct profile *p)
{
    int errors = driver_check_metric_list(p);
    for (size_t i = 0; i < p->metrics.n; i++) {
        const struct metric_def *m = PROFILE_METRIC(p, i);
        if (!m->field || !*m->field) {
            cfg_report(m->node, "field",
                       "missing required key 'field' (where the metric is in the device's JSON, "
                       "e.g. vitals.heart)");
            errors++;
        }
    }
    return errors;
}

static const struct driver_protocol mj_protocols[] = {
    {PROTO_MQTT_JSON, "mqtt-json", mj_check_profile, NULL}, {0}};

const struct driver drv_mqtt_json = {
    .name = "mqtt-json",
    .bus_types = mj_bus_types,
    .protocols = mj_protocols,
    .attach = mj_attach,
    .detach = mj_detach,
    .prepare = mj_prepare,
    .release = mj_release,
    .open = mj_open,
    .start = mj_start,
    .poll = mj_poll,
    .close = mj_close,
};
