/* Wearables heard by BLE receivers (bus type `ble`): the receivers on each
 * floor forward the advertisements they hear to the gateway's local broker
 * (OpenMQTTGateway, Minew or Ingics formats); this driver subscribes to
 * their topics and runs every message through the pipeline of drivers/ble/
 * (adapter, dedup, decoding with the wearable's profile, location by zone,
 * liveness). Each wearable is a device with its `mac` and a profile with
 * `protocol: ble` and a `ble:` section:
 *
 *   buses:
 *     - id: ble-floor2
 *       type: ble
 *       host: 127.0.0.1            # the local broker
 *       port: 1883
 *       format: omg                # omg | minew | ingics
 *       topics: ["home/+/BTtoMQTT/#"]
 *       out_of_range: 60s
 *       location: {zones: [{id: room-201, receivers: [AC233FA00101]},
 *                          {id: exit-east, exit: true, receivers: [AC233FA00109]}]}
 *   devices:
 *     - {id: band-17, bus: ble-floor2, mac: "C3:00:00:AB:CD:17", profile: care-band}
 *
 * A poll returns a reading when the wearable said something new (a decoded
 * advertisement, SOS and fall latched until then so a press between two
 * polls is never lost) or when where it is changed (in range or not, zone,
 * exit): the reading carries the profile's metrics and in_range, zone,
 * zone_exit, battery_low, rssi, and the zone's id as its room label. Otherwise CH_ENODATA: a
 * bracelet that no receiver hears is not a broken device but a resident out of range, which
 * in_range = 0 says (once, as a change). */
#include "ble_table.h"
#include "driver.h"
#include "err.h"
#include "log.h"
#include "mqtt_link.h"
#include "util.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "ble"

struct bl_dev {
    const struct device_cfg *cfg;
    uint8_t mac[6];
    /* scheduler thread only */
    int64_t sent_reading_ms; /* last decoded reading already returned */
    bool sent_any;
    bool in_range;
    int zone;
    bool zone_exit;
};

/* A bus's wearables (attach): prepare adds, release removes, open tracks
 * them in the bus's table. One thread prepares and releases. */
struct bl_line {
    size_t n;
    struct bl_dev **devs;
};

struct bl_bus {
    const struct bus_cfg *cfg;
    struct bl_line *line;
    MQTTAsync client;
    struct ble_zones *zones;
    struct ble_table *table;
    int64_t opened_mono;
    uint64_t messages;
};

static void *bl_attach(const struct bus_cfg *bus)
{
    (void)bus;
    return ch_xcalloc(1, sizeof(struct bl_line));
}

static void bl_detach(void *state)
{
    struct bl_line *line = state;
    free(line->devs);
    free(line);
}

static int bl_prepare(void *state, const struct bus_cfg *bus, const struct device_cfg *dev,
                      void **dev_ctx)
{
    struct bl_line *line = state;
    if (dev->prof->protocol != PROTO_BLE) {
        cfg_report(dev->node, "profile",
                   "key 'profile': '%s' does not describe a BLE wearable (protocol: ble), the only "
                   "kind of device a ble bus has",
                   dev->prof->id);
        return CH_ECONFIG;
    }
    if (bus->topics.n == 0) {
        cfg_report(bus->node, "topics",
                   "key 'topics': empty; where the receivers publish, e.g. home/+/BTtoMQTT/#");
        return CH_ECONFIG;
    }
    struct bl_dev *d = ch_xcalloc(1, sizeof *d);
    if (!dev->mac || !ble_mac_parse(dev->mac, strlen(dev->mac), d->mac)) {
        cfg_report(dev->node, "mac", "key 'mac': '%s' is not a MAC address (AA:BB:CC:DD:EE:FF)",
                   dev->mac ? dev->mac : "");
        free(d);
        return CH_ECONFIG;
    }
    d->cfg = dev;
    d->zone = -1;
    line->devs = ch_xrealloc(line->devs, (line->n + 1) * sizeof *line->devs);
    line->devs[line->n++] = d;
    *dev_ctx = d;
    return 0;
}

static void bl_release(void *state, void *dev_ctx)
{
    struct bl_line *line = state;
    struct bl_dev *d = dev_ctx;
    if (!d)
        return;
    for (size_t i = 0; i < line->n; i++)
        if (line->devs[i] == d)
            line->devs[i] = line->devs[--line->n];
    free(d);
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    (void)tlen;
    struct bl_bus *b = ctx;
    __atomic_add_fetch(&b->messages, 1, __ATOMIC_RELAXED);
    /* rejections are counted by reason in the table's stats */
    ble_table_ingest(b->table, (enum ble_rx_format)b->cfg->format, topic, msg->payload,
                     (size_t)msg->payloadlen, ch_mono_ms());
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct bl_bus *b = ctx;
    LOGI(MOD, b->cfg->id, "connected to %s:%lld", b->cfg->host, (long long)b->cfg->port);
    for (size_t i = 0; i < b->cfg->topics.n; i++) {
        const char *t = ((char **)b->cfg->topics.items)[i];
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        int rc = MQTTAsync_subscribe(b->client, t, 0, &ro);
        if (rc != MQTTASYNC_SUCCESS)
            LOGW(MOD, b->cfg->id, "cannot subscribe to %s: %s", t, MQTTAsync_strerror(rc));
    }
}

static void on_lost(void *ctx, char *cause)
{
    struct bl_bus *b = ctx;
    LOGW(MOD, b->cfg->id, "connection lost%s%s; reconnecting", cause ? ": " : "",
         cause ? cause : "");
}

static void bus_free(struct bl_bus *b)
{
    mqtt_link_close(&b->client); /* no callback runs after this */
    ble_table_free(b->table);
    ble_zones_free(b->zones);
    free(b);
}

static int bl_open(void *state, const struct bus_cfg *bus, void **bus_ctx)
{
    struct bl_bus *b = ch_xcalloc(1, sizeof *b);
    b->cfg = bus;
    b->line = state;
    char err[200];
    if (bus->location.zones.n && ble_zones_new(&bus->location, &b->zones, err, sizeof err) != 0) {
        LOGE(MOD, bus->id, "bad location section: %s", err);
        bus_free(b);
        return -EINVAL;
    }
    struct ble_table_opts o = {.out_of_range_ms = bus->out_of_range_ms,
                               .battery_low = bus->battery_low};
    b->table = ble_table_new(&o, b->zones);
    for (size_t i = 0; i < b->line->n; i++) {
        const struct bl_dev *d = b->line->devs[i];
        int rc = ble_table_add(b->table, d->cfg->id, d->mac, &d->cfg->prof->ble);
        if (rc != 0)
            LOGE(MOD, d->cfg->id, "cannot track it: %s (the same MAC twice?)", ch_strerror(rc));
    }
    char uri[300], cid[200];
    snprintf(uri, sizeof uri, "tcp://%s:%lld", bus->host, (long long)bus->port);
    snprintf(cid, sizeof cid, "carehub-edge-%s-%ld", bus->id, (long)getpid());
    struct mqtt_link_cbs cbs = {
        .ctx = b, .on_message = on_message, .on_lost = on_lost, .on_connected = on_connected};
    int rc = mqtt_link_open(uri, cid, NULL, NULL, &cbs, &b->client);
    if (rc != 0) {
        bus_free(b);
        return rc;
    }
    b->opened_mono = ch_mono_ms();
    *bus_ctx = b;
    return 0;
}

static void bl_close(void *bus_ctx)
{
    struct bl_bus *b = bus_ctx;
    if (!b)
        return;
    struct ble_table_stats st;
    ble_table_stats(b->table, &st);
    LOGI(MOD, b->cfg->id,
         "closing: %llu messages, %llu readings, %llu duplicates, %llu unknown MACs, %llu "
         "without a matching profile",
         (unsigned long long)b->messages, (unsigned long long)st.readings,
         (unsigned long long)st.duplicates, (unsigned long long)st.unknown_mac,
         (unsigned long long)st.no_match);
    bus_free(b);
}

static int bl_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    struct bl_bus *b = bus_ctx;
    struct bl_dev *d = dev_ctx;
    int64_t now = ch_mono_ms();
    struct ble_state st;
    if (ble_table_poll(b->table, dev->id, now, &st) != 0)
        return CH_EPROTO; /* not tracked: logged at open */
    bool fresh = st.last_reading_ms > d->sent_reading_ms;
    bool moved = st.in_range != d->in_range || st.zone != d->zone || st.zone_exit != d->zone_exit;
    /* never heard: nothing to say until it counts as out of range */
    if (!st.heard && now - b->opened_mono < b->cfg->out_of_range_ms)
        return CH_ENODATA;
    if (d->sent_any && !fresh && !moved)
        return CH_ENODATA;
    if (st.in_range != d->in_range && d->sent_any)
        LOGI(MOD, dev->id, "%s",
             st.in_range ? "in range again" : "out of range: no receiver hears it");
    d->sent_any = true;
    d->sent_reading_ms = st.last_reading_ms;
    d->in_range = st.in_range;
    d->zone = st.zone;
    d->zone_exit = st.zone_exit;
    out->metrics = ch_xcalloc(st.n + 1, sizeof *out->metrics);
    out->n_metrics = 0;
    for (size_t i = 0; i < st.n; i++) {
        struct ch_metric *m = &out->metrics[out->n_metrics++];
        ch_strlcpy(m->name, st.m[i].name, sizeof m->name);
        m->value = st.m[i].value;
    }
    if (st.zone_id) /* where the wearer is, readable: the room label of this reading */
        ch_strlcpy(out->room, st.zone_id, sizeof out->room);
    out->ts_ms = ch_now_ms();
    out->quality = CH_Q_GOOD;
    stats->requests++;
    return 0;
}

static const struct cfg_enum bl_formats[] = {
    {"omg", BLE_RX_OMG}, {"minew", BLE_RX_MINEW}, {"ingics", BLE_RX_INGICS}, {NULL, 0}};

#define B(k) offsetof(struct bus_cfg, k)
/* clang-format off */
static const struct cfg_key bl_keys[] = {
    {.key = "host",         .type = CFG_STR,      .offset = B(host), .required = true},
    {.key = "port",         .type = CFG_INT,      .offset = B(port), .def = "1883", .min = 1, .max = 65535},
    {.key = "format",       .type = CFG_ENUM,     .offset = B(format), .def = "omg", .enums = bl_formats},
    {.key = "topics",       .type = CFG_STRLIST,  .offset = B(topics), .required = true},
    {.key = "location",     .type = CFG_MAP,      .offset = B(location), .sub = ble_location_keys},
    {.key = "out_of_range", .type = CFG_DURATION, .offset = B(out_of_range_ms), .def = "60s", .min = 1000, .max = 86400000},
    {.key = "battery_low",  .type = CFG_FLOAT,    .offset = B(battery_low), .def = "20", .min = -1, .max = 100},
    CFG_END,
};
/* clang-format on */
#undef B

static const struct driver_bus_type bl_bus_types[] = {{BUS_BLE, "ble", bl_keys}, {0}};

const struct driver drv_ble = {
    .name = "ble",
    .bus_types = bl_bus_types,
    .attach = bl_attach,
    .detach = bl_detach,
    .prepare = bl_prepare,
    .release = bl_release,
    .open = bl_open,
    .poll = bl_poll,
    .close = bl_close,
};
