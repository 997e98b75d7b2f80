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
 * The device pushes; the scheduler still asks at the device's interval.
 * Paho's thread keeps each device's latest values; a poll returns them once
 * (a reading per message, the newest if several came since the last poll),
 * CH_ENODATA when nothing new came, and CH_ETIMEOUT when the device has been
 * silent for three intervals, so the scheduler reports it offline. A payload
 * that is not JSON, or has none of the profile's fields, is rejected, logged
 * and counted; the device keeps its last good values.
 *
 * Devices are registered by prepare() (per bus), and a bus subscribes to the
 * topics of its devices on every (re)connect. */
#include "driver.h"
#include "err.h"
#include "log.h"
#include "mqtt_json.h"
#include "push_registry.h"
#include "mqtt_link.h"
#include "util.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD              "mqtt-json"
#define SILENT_INTERVALS 3
#define PAYLOAD_MAX      65536

struct mj_dev {
    struct push_dev reg; /* first: the registry's links */
    /* guarded by the registry's lock */
    bool fresh;         /* a good message arrived since the last poll */
    int64_t last_ms;    /* wall time of the last good message; 0 none */
    int64_t since_mono; /* when we began to wait for data */
    double *values;
    bool *have;
    uint64_t rejected;
};

struct mj_bus {
    const struct bus_cfg *cfg;
    MQTTAsync client;
};

/* Every prepared device; Paho's threads look devices up here by topic. */
static struct push_registry reg = PUSH_REGISTRY_INIT;

static int mj_prepare(const struct bus_cfg *bus, const struct device_cfg *dev, void **dev_ctx)
{
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
    d->reg.cfg = dev;
    d->reg.bus = bus;
    d->values = ch_xcalloc(p->metrics.n + 1, sizeof *d->values);
    d->have = ch_xcalloc(p->metrics.n + 1, sizeof *d->have);
    d->since_mono = ch_mono_ms();
    push_registry_add(&reg, &d->reg);
    *dev_ctx = d;
    return 0;
}

static void mj_release(void *dev_ctx)
{
    struct mj_dev *d = dev_ctx;
    if (!d)
        return;
    push_registry_remove(&reg, &d->reg);
    free(d->values);
    free(d->have);
    free(d);
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

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    (void)tlen;
    struct mj_bus *b = ctx;
    pthread_mutex_lock(&reg.lock);
    for (struct push_dev *pd = reg.head; pd; pd = pd->next) {
        struct mj_dev *d = (struct mj_dev *)pd;
        if (d->reg.bus != b->cfg || strcmp(d->reg.cfg->topic, topic) != 0)
            continue;
        char why[160];
        const struct profile *p = d->reg.cfg->prof;
        bool *had = ch_xcalloc(p->metrics.n + 1, sizeof *had);
        memcpy(had, d->have, p->metrics.n * sizeof *had);
        memset(d->have, 0, p->metrics.n * sizeof *d->have);
        const char *bad = mqtt_json_decode(p, msg->payload, (size_t)msg->payloadlen, d->values,
                                           d->have, why, sizeof why);
        if (bad) {
            memcpy(d->have, had, p->metrics.n * sizeof *had); /* the last good values stay */
            d->rejected++;
            uint64_t nbad = d->rejected;
            pthread_mutex_unlock(&reg.lock);
            if (nbad == 1 || nbad % 100 == 0)
                LOGW(MOD, d->reg.cfg->id, "message on %s rejected (%llu so far): %s", topic,
                     (unsigned long long)nbad, bad);
            free(had);
            goto out;
        }
        free(had);
        d->fresh = true;
        d->last_ms = ch_now_ms();
    }
    pthread_mutex_unlock(&reg.lock);
out:
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct mj_bus *b = ctx;
    LOGI(MOD, b->cfg->id, "connected to %s:%lld", b->cfg->host, (long long)b->cfg->port);
    pthread_mutex_lock(&reg.lock);
    for (struct push_dev *pd = reg.head; pd; pd = pd->next) {
        struct mj_dev *d = (struct mj_dev *)pd;
        if (d->reg.bus != b->cfg)
            continue;
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        int rc = MQTTAsync_subscribe(b->client, d->reg.cfg->topic, 1, &ro);
        if (rc != MQTTASYNC_SUCCESS)
            LOGW(MOD, d->reg.cfg->id, "cannot subscribe to %s: %s", d->reg.cfg->topic,
                 MQTTAsync_strerror(rc));
    }
    pthread_mutex_unlock(&reg.lock);
}

static void on_lost(void *ctx, char *cause)
{
    struct mj_bus *b = ctx;
    LOGW(MOD, b->cfg->id, "connection lost%s%s; reconnecting", cause ? ": " : "",
         cause ? cause : "");
}

static int mj_open(const struct bus_cfg *bus, void **bus_ctx)
{
    struct mj_bus *b = ch_xcalloc(1, sizeof *b);
    b->cfg = bus;
    char uri[300], cid[200];
    snprintf(uri, sizeof uri, "tcp://%s:%lld", bus->host, (long long)bus->port);
    snprintf(cid, sizeof cid, "carehub-edge-%s-%ld", bus->id, (long)getpid());
    struct mqtt_link_cbs cbs = {
        .ctx = b, .on_message = on_message, .on_lost = on_lost, .on_connected = on_connected};
    int rc = mqtt_link_open(uri, cid, NULL, NULL, &cbs, &b->client);
    if (rc != 0) {
        free(b);
        return rc;
    }
    /* the silence clock of every device starts now */
    pthread_mutex_lock(&reg.lock);
    for (struct push_dev *pd = reg.head; pd; pd = pd->next)
        if (pd->bus == bus)
            ((struct mj_dev *)pd)->since_mono = ch_mono_ms();
    pthread_mutex_unlock(&reg.lock);
    *bus_ctx = b;
    return 0;
}

static void mj_close(void *bus_ctx)
{
    struct mj_bus *b = bus_ctx;
    if (!b)
        return;
    mqtt_link_close(&b->client); /* no callback runs after this */
    free(b);
}

static int mj_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    (void)bus_ctx;
    struct mj_dev *d = dev_ctx;
    const struct profile *p = dev->prof;
    int64_t silent_ms = SILENT_INTERVALS * dev->interval_ms;
    pthread_mutex_lock(&reg.lock);
    if (!d->fresh) {
        bool silent = d->last_ms ? ch_now_ms() - d->last_ms > silent_ms
                                 : ch_mono_ms() - d->since_mono > silent_ms;
        pthread_mutex_unlock(&reg.lock);
        return silent ? CH_ETIMEOUT : CH_ENODATA;
    }
    out->metrics = ch_xcalloc(p->metrics.n + 1, sizeof *out->metrics);
    out->n_metrics = 0;
    for (size_t i = 0; i < p->metrics.n; i++) {
        if (!d->have[i])
            continue;
        const struct metric_def *m = PROFILE_METRIC(p, i);
        struct ch_metric *cm = &out->metrics[out->n_metrics++];
        ch_strlcpy(cm->name, m->metric, sizeof cm->name);
        ch_strlcpy(cm->unit, m->unit ? m->unit : "", sizeof cm->unit);
        cm->value = d->values[i];
    }
    out->ts_ms = d->last_ms;
    out->quality = CH_Q_GOOD;
    d->fresh = false;
    pthread_mutex_unlock(&reg.lock);
    stats->requests++; /* one message taken */
    return 0;
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

static const struct driver_bus_type mj_bus_types[] = {{BUS_MQTT, "mqtt", mj_keys}, {0}};

const struct driver drv_mqtt_json = {
    .name = "mqtt-json",
    .bus_types = mj_bus_types,
    .prepare = mj_prepare,
    .release = mj_release,
    .open = mj_open,
    .poll = mj_poll,
    .close = mj_close,
};
