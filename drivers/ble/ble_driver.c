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
 * Every ble bus of a site feeds one wearable table (the driver's shared
 * state): a bus is one connection to the receivers of one make, and an
 * advertisement heard by receivers of several makes is one reading, located
 * by comparing the RSSI of all of them. The buses' zones are merged by id (a
 * room may hold a receiver of each make); a wearable is heard through every
 * bus, whichever its device names, and keeps its own bus's out_of_range
 * and battery_low. What a bus's receivers send that is rejected is logged
 * (the first, then at most once a minute, with the latest reason) and
 * counted per bus and reason (edge_bus: messages, advertisements,
 * rejected, rejected_<reason>).
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
#include <libfyaml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD            "ble"
#define WARN_PERIOD_MS 60000 /* rejections are logged at most this often per bus */

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

struct bl_line;

/* What every ble bus of one configuration shares (attach's shared slot):
 * the site's one wearable table and its zones, built by check_shared once
 * every bus is attached (on the thread that makes the poller, before any
 * bus opens), kept until release_shared; the table has its own lock. */
struct bl_site {
    size_t n_lines;
    struct bl_line **lines;
    struct ble_zones *zones;
    struct ble_table *table; /* built by check_shared, before any open */
};

/* One bus: a connection to receivers of one make, its wearables (prepare
 * adds, release removes; one thread does both) and its receivers' counts. */
struct bl_line {
    struct bl_site *site;
    const struct bus_cfg *cfg;
    size_t n;
    struct bl_dev **devs;
    struct ble_rx_stats rx; /* guarded by the table's lock */
    /* Paho's thread only */
    uint64_t warned; /* rejections logged so far */
    int64_t next_warn_ms;
};

struct bl_bus {
    struct bl_line *line;
    MQTTAsync client;
    int64_t opened_mono;
};

static void *bl_attach(const struct bus_cfg *bus, void **shared)
{
    struct bl_site *site = *shared;
    if (!site) {
        site = ch_xcalloc(1, sizeof *site);
        *shared = site;
    }
    struct bl_line *line = ch_xcalloc(1, sizeof *line);
    line->site = site;
    line->cfg = bus;
    site->lines = ch_xrealloc(site->lines, (site->n_lines + 1) * sizeof *site->lines);
    site->lines[site->n_lines++] = line;
    return line;
}

static void bl_detach(void *state)
{
    struct bl_line *line = state;
    struct bl_site *site = line->site;
    for (size_t i = 0; i < site->n_lines; i++)
        if (site->lines[i] == line)
            site->lines[i] = site->lines[--site->n_lines];
    free(line->devs);
    free(line);
}

static void bl_release_shared(void *shared)
{
    struct bl_site *site = shared;
    if (!site)
        return;
    ble_table_free(site->table);
    ble_zones_free(site->zones);
    free(site->lines);
    free(site);
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

/* The zones of every bus as one location section: a zone named on several
 * buses is one zone with all their receivers. The result borrows the
 * buses' strings; free its zones' receiver arrays and its zone array. */
static void merge_zones(const struct bl_site *site, struct ble_location_cfg *out)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    for (size_t l = 0; l < site->n_lines; l++)
        cap += site->lines[l]->cfg->location.zones.n;
    struct ble_zone_cfg *zones = ch_xcalloc(cap + 1, sizeof *zones);
    const struct bus_cfg *first = NULL;
    for (size_t l = 0; l < site->n_lines; l++) {
        const struct bus_cfg *bus = site->lines[l]->cfg;
        const struct ble_location_cfg *loc = &bus->location;
        if (loc->zones.n == 0)
            continue;
        if (!first) {
            first = bus;
            out->window_ms = loc->window_ms;
            out->margin_db = loc->margin_db;
            out->dwell_ms = loc->dwell_ms;
        } else if (loc->window_ms != out->window_ms || loc->margin_db != out->margin_db ||
                   loc->dwell_ms != out->dwell_ms) {
            LOGW(MOD, bus->id,
                 "location window, margin or dwell differ from bus %s's: the site's wearables "
                 "are located with %s's",
                 first->id, first->id);
        }
        for (size_t k = 0; k < loc->zones.n; k++) {
            const struct ble_zone_cfg *zc = &((const struct ble_zone_cfg *)loc->zones.items)[k];
            struct ble_zone_cfg *m = NULL;
            for (size_t j = 0; j < out->zones.n && !m; j++)
                if (zc->id && zones[j].id && !strcmp(zones[j].id, zc->id))
                    m = &zones[j];
            if (!m) {
                m = &zones[out->zones.n++];
                *m = *zc;
                m->receivers.items = NULL;
                m->receivers.n = 0;
            }
            m->exit = m->exit || zc->exit;
            if (!m->name)
                m->name = zc->name;
            char **rx = ch_xrealloc(m->receivers.items,
                                    (m->receivers.n + zc->receivers.n + 1) * sizeof *rx);
            for (size_t r = 0; r < zc->receivers.n; r++) {
                char *id = ((char **)zc->receivers.items)[r];
                bool dup = false;
                for (size_t q = 0; q < m->receivers.n && !dup; q++)
                    dup = id && rx[q] && !strcmp(rx[q], id);
                if (!dup) /* one receiver under this zone on two buses */
                    rx[m->receivers.n++] = id;
            }
            m->receivers.items = rx;
        }
    }
    out->zones.items = zones;
}

/* Builds the site's table once every bus is attached and every wearable
 * prepared (check_shared): every bus's wearables, with their bus's limits,
 * over the merged zones. Returns 0, or CH_ECONFIG after reporting zones that
 * cannot be merged (a receiver in two zones, too many zones). */
static int bl_check_shared(void *shared)
{
    struct bl_site *site = shared;
    struct ble_location_cfg loc;
    merge_zones(site, &loc);
    char err[200];
    int rc = 0;
    if (loc.zones.n && ble_zones_new(&loc, &site->zones, err, sizeof err) != 0) {
        const struct bus_cfg *first = site->lines[0]->cfg;
        cfg_report(first->node, "location",
                   "key 'location': the site's BLE zones (every ble bus's, merged by zone id) "
                   "cannot be built: %s",
                   err);
        rc = CH_ECONFIG;
    }
    for (size_t k = 0; k < loc.zones.n; k++)
        free(((struct ble_zone_cfg *)loc.zones.items)[k].receivers.items);
    free(loc.zones.items);
    size_t n = 0;
    for (size_t l = 0; l < site->n_lines; l++)
        n += site->lines[l]->n;
    struct ble_table_opts o = {.max_wearables = n > 1024 ? n : 0};
    if (site->n_lines) {
        o.out_of_range_ms = site->lines[0]->cfg->out_of_range_ms;
        o.battery_low = site->lines[0]->cfg->battery_low;
    }
    site->table = ble_table_new(&o, site->zones);
    for (size_t l = 0; l < site->n_lines; l++) {
        const struct bl_line *line = site->lines[l];
        for (size_t i = 0; i < line->n; i++) {
            const struct bl_dev *d = line->devs[i];
            int arc = ble_table_add(site->table, d->cfg->id, d->mac, &d->cfg->prof->ble);
            if (arc == 0) {
                ble_table_set_limits(site->table, d->cfg->id, line->cfg->out_of_range_ms,
                                     line->cfg->battery_low);
            } else {
                cfg_report(d->cfg->node, "mac",
                           "key 'mac': wearable '%s' cannot be tracked: %s (its MAC is another "
                           "wearable's, or the site has more than %d)",
                           d->cfg->id, ch_strerror(arc), BLE_MAX_WEARABLES);
                rc = CH_ECONFIG;
            }
        }
    }
    return rc;
}

/* Logs what the bus's receivers sent that was rejected (total so far):
 * the first at once, then at most once a minute, with the count and the
 * latest reason. */
static void warn_rejections(struct bl_line *line, uint64_t total, int64_t now)
{
    if (total == line->warned || now < line->next_warn_ms)
        return;
    struct ble_rx_stats rx;
    ble_table_rx_stats(line->site->table, &line->rx, &rx);
    LOGW(MOD, line->cfg->id, "%llu rejected from the receivers (%llu new, of %llu messages): %s",
         (unsigned long long)total, (unsigned long long)(total - line->warned),
         (unsigned long long)rx.messages, rx.last_error);
    line->warned = total;
    line->next_warn_ms = now + WARN_PERIOD_MS;
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    (void)tlen;
    struct bl_bus *b = ctx;
    struct bl_line *line = b->line;
    int64_t now = ch_mono_ms();
    uint64_t rejected;
    ble_table_ingest_rx(line->site->table, (enum ble_rx_format)line->cfg->format, topic,
                        msg->payload, (size_t)msg->payloadlen, now, &line->rx, &rejected);
    warn_rejections(line, rejected, now); /* whole or in part */
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct bl_bus *b = ctx;
    const struct bus_cfg *cfg = b->line->cfg;
    LOGI(MOD, cfg->id, "connected to %s:%lld", cfg->host, (long long)cfg->port);
    for (size_t i = 0; i < cfg->topics.n; i++) {
        const char *t = ((char **)cfg->topics.items)[i];
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        int rc = MQTTAsync_subscribe(b->client, t, 0, &ro);
        if (rc != MQTTASYNC_SUCCESS)
            LOGW(MOD, cfg->id, "cannot subscribe to %s: %s", t, MQTTAsync_strerror(rc));
    }
}

static void on_lost(void *ctx, char *cause)
{
    struct bl_bus *b = ctx;
    LOGW(MOD, b->line->cfg->id, "connection lost%s%s; reconnecting", cause ? ": " : "",
         cause ? cause : "");
}

static int bl_open(void *state, const struct bus_cfg *bus, void **bus_ctx)
{
    struct bl_line *line = state;
    if (!line->site->table)
        return -EINVAL; /* check_shared refused the configuration */
    struct bl_bus *b = ch_xcalloc(1, sizeof *b);
    b->line = line;
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
    b->opened_mono = ch_mono_ms();
    *bus_ctx = b;
    return 0;
}

static void bl_close(void *bus_ctx)
{
    struct bl_bus *b = bus_ctx;
    if (!b)
        return;
    mqtt_link_close(&b->client); /* no callback runs after this */
    struct bl_line *line = b->line;
    struct ble_rx_stats rx;
    ble_table_rx_stats(line->site->table, &line->rx, &rx);
    LOGI(MOD, line->cfg->id, "closing: %llu messages, %llu advertisements, %llu rejected",
         (unsigned long long)rx.messages, (unsigned long long)rx.advs,
         (unsigned long long)ble_rx_rejected_total(&rx));
    free(b);
}

/* Per-bus counters for edge_bus: messages, advertisements, rejected, and
 * rejected by reason. */
static const char *const rejected_names[BLE_REJ_COUNT] = {
    [BLE_REJ_JSON] = "rejected_json",   [BLE_REJ_FIELD] = "rejected_field",
    [BLE_REJ_HEX] = "rejected_hex",     [BLE_REJ_MAC] = "rejected_mac",
    [BLE_REJ_RSSI] = "rejected_rssi",   [BLE_REJ_SIZE] = "rejected_size",
    [BLE_REJ_TOPIC] = "rejected_topic", [BLE_REJ_LINE] = "rejected_line",
    [BLE_REJ_TIME] = "rejected_time",
};

static size_t bl_counters(void *state, struct drv_counter *out, size_t max)
{
    struct bl_line *line = state;
    struct ble_rx_stats rx = {0};
    if (line->site->table) /* built before any thread asks */
        ble_table_rx_stats(line->site->table, &line->rx, &rx);
    struct drv_counter all[3 + BLE_REJ_COUNT] = {
        {"messages", (double)rx.messages},
        {"advertisements", (double)rx.advs},
        {"rejected", (double)ble_rx_rejected_total(&rx)},
    };
    for (size_t r = 0; r < BLE_REJ_COUNT; r++)
        all[3 + r] = (struct drv_counter){rejected_names[r], (double)rx.rejected[r]};
    size_t n = CH_ARRAY_LEN(all);
    if (out && max)
        memcpy(out, all, (n < max ? n : max) * sizeof *out);
    return n;
}

static int bl_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    struct bl_bus *b = bus_ctx;
    struct bl_dev *d = dev_ctx;
    int64_t now = ch_mono_ms();
    struct ble_state st;
    if (ble_table_poll(b->line->site->table, dev->id, now, &st) != 0)
        return CH_EPROTO; /* not tracked: logged at open */
    bool fresh = st.last_reading_ms > d->sent_reading_ms;
    bool moved = st.in_range != d->in_range || st.zone != d->zone || st.zone_exit != d->zone_exit;
    /* never heard: nothing to say until it counts as out of range */
    if (!st.heard && now - b->opened_mono < b->line->cfg->out_of_range_ms)
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

static const struct driver_bus_type bl_bus_types[] = {{BUS_BLE, "ble", bl_keys, DRV_ADDR_MAC}, {0}};

/* A wearable's profile says how to read its advertisements (ble:). */
static int bl_check_profile(struct profile *p)
{
    char err[200];
    long bad = -1;
    struct fy_node *bn = p->node ? fy_node_mapping_lookup_by_string(p->node, "ble", FY_NT) : NULL;
    if (!bn) {
        cfg_report(p->node, "ble",
                   "missing required key 'ble' (how to read the wearable's advertisements)");
        return 1;
    }
    if (ble_profile_prepare(&p->ble, err, sizeof err, &bad) != 0) {
        struct ble_field *f = bad >= 0 ? &((struct ble_field *)p->ble.fields.items)[bad] : NULL;
        cfg_report(f && f->node ? f->node : bn, NULL, "key 'ble': %s", err);
        return 1;
    }
    return 0;
}

/* What every wearable's reading carries besides its profile's fields:
 * where it is (ble_table_poll), and a standard format's own names. */
static bool bl_has_metric(const struct profile *p, const char *m)
{
    static const char *const located[] = {"in_range", "zone", "zone_exit", "battery_low", "rssi"};
    for (size_t i = 0; i < CH_ARRAY_LEN(located); i++)
        if (strcmp(located[i], m) == 0)
            return true;
    for (size_t i = 0; i < p->ble.fields.n; i++)
        if (strcmp(((const struct ble_field *)p->ble.fields.items)[i].metric, m) == 0)
            return true;
    /* standard formats (iBeacon, Eddystone TLM, BTHome) name their own */
    return p->ble.match == BLE_MATCH_IBEACON || p->ble.match == BLE_MATCH_EDDYSTONE_TLM ||
           p->ble.match == BLE_MATCH_BTHOME;
}

static const struct driver_protocol bl_protocols[] = {
    {PROTO_BLE, "ble", bl_check_profile, bl_has_metric}, {0}};

const struct driver drv_ble = {
    .name = "ble",
    .bus_types = bl_bus_types,
    .protocols = bl_protocols,
    .open_without_devices = true,
    .attach = bl_attach,
    .detach = bl_detach,
    .release_shared = bl_release_shared,
    .check_shared = bl_check_shared,
    .counters = bl_counters,
    .prepare = bl_prepare,
    .release = bl_release,
    .open = bl_open,
    .poll = bl_poll,
    .close = bl_close,
};
