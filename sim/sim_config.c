#include "sim_config.h"

#include "cfg.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include "ble_adv.h"
#include "sim_value.h"

#include <arpa/inet.h>
#include <libfyaml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The YAML shapes, as cfg_load() fills them. Semantic checks then turn them
 * into struct sim_config. */
struct raw_endpoint {
    char *id, *tcp, *rtu, *radar;
    int64_t baud, data_bits, stop_bits;
    int parity;
    struct fy_node *node;
};

struct raw_slave {
    char *name, *endpoint, *model;
    int64_t unit, count;
    struct fy_node *node;
};

struct raw_set {
    char *metric;
    double value, ramp_to, pulse;
    int64_t over_ms, for_ms;
    bool release;
};

struct raw_walk {
    char *to;
    int64_t over_ms;
    bool release;
};

struct raw_event {
    int64_t at_ms;
    char *slave, *wearable, *receiver, *wifi_bed;
    int fault;
    int64_t exception_code;
    struct raw_set set;
    struct raw_walk walk;
    struct fy_node *node;
};

struct raw_mqtt {
    char *broker, *client_id;
};

struct raw_zone {
    char *id;
    struct cfg_list adjacent;
    struct fy_node *node;
};

struct raw_receiver {
    char *id, *zone, *topic;
    int format;
    int64_t interval_ms;
    struct fy_node *node;
};

struct raw_wearable {
    char *mac, *resident, *home;
    int64_t interval_ms;
    double battery, hr;
    struct fy_node *node;
};

struct raw_wifi_bed {
    char *name, *topic, *resident;
    int64_t interval_ms;
    struct fy_node *node;
};

struct raw_routine {
    char *dining;
    struct cfg_list walk;
};

struct raw_file {
    int64_t seed, utc_offset_min;
    struct cfg_list endpoints, slaves, scenario;
    struct raw_mqtt mqtt;
    char *start_at;
    struct cfg_list zones, receivers, wearables, wifi_beds;
    struct raw_routine routine;
};

#define DURATION_MAX 9.0e15 /* ms; what ch_parse_duration_ms accepts */

static const struct cfg_enum parity_names[] = {{"N", 'N'}, {"E", 'E'}, {"O", 'O'}, {NULL, 0}};

static const struct cfg_key endpoint_keys[] = {
    {.key = "id", .type = CFG_ID, .offset = offsetof(struct raw_endpoint, id), .required = true},
    {.key = "tcp", .type = CFG_STR, .offset = offsetof(struct raw_endpoint, tcp)},
    {.key = "rtu", .type = CFG_PATH, .offset = offsetof(struct raw_endpoint, rtu)},
    {.key = "radar", .type = CFG_PATH, .offset = offsetof(struct raw_endpoint, radar)},
    {.key = "baud",
     .type = CFG_INT,
     .offset = offsetof(struct raw_endpoint, baud),
     .def = "9600",
     .min = 1200,
     .max = 115200},
    {.key = "parity",
     .type = CFG_ENUM,
     .offset = offsetof(struct raw_endpoint, parity),
     .def = "N",
     .enums = parity_names},
    {.key = "data_bits",
     .type = CFG_INT,
     .offset = offsetof(struct raw_endpoint, data_bits),
     .def = "8",
     .min = 7,
     .max = 8},
    {.key = "stop_bits",
     .type = CFG_INT,
     .offset = offsetof(struct raw_endpoint, stop_bits),
     .def = "1",
     .min = 1,
     .max = 2},
    CFG_END,
};

static const struct cfg_key slave_keys[] = {
    {.key = "name", .type = CFG_ID, .offset = offsetof(struct raw_slave, name), .required = true},
    {.key = "endpoint",
     .type = CFG_ID,
     .offset = offsetof(struct raw_slave, endpoint),
     .required = true},
    {.key = "unit",
     .type = CFG_INT,
     .offset = offsetof(struct raw_slave, unit),
     .min = 1,
     .max = 255},
    {.key = "model",
     .type = CFG_STR,
     .offset = offsetof(struct raw_slave, model),
     .required = true},
    {.key = "count",
     .type = CFG_INT,
     .offset = offsetof(struct raw_slave, count),
     .def = "1",
     .min = 1,
     .max = 255},
    CFG_END,
};

static const struct cfg_key set_keys[] = {
    {.key = "metric", .type = CFG_STR, .offset = offsetof(struct raw_set, metric)},
    {.key = "value", .type = CFG_FLOAT, .offset = offsetof(struct raw_set, value)},
    {.key = "ramp_to", .type = CFG_FLOAT, .offset = offsetof(struct raw_set, ramp_to)},
    {.key = "over",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_set, over_ms),
     .min = 1,
     .max = DURATION_MAX},
    {.key = "pulse", .type = CFG_FLOAT, .offset = offsetof(struct raw_set, pulse)},
    {.key = "for",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_set, for_ms),
     .min = 1,
     .max = DURATION_MAX},
    {.key = "release", .type = CFG_BOOL, .offset = offsetof(struct raw_set, release)},
    CFG_END,
};

static const struct cfg_key walk_keys[] = {
    {.key = "to", .type = CFG_ID, .offset = offsetof(struct raw_walk, to)},
    {.key = "over",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_walk, over_ms),
     .def = "30s",
     .min = 1,
     .max = DURATION_MAX},
    {.key = "release", .type = CFG_BOOL, .offset = offsetof(struct raw_walk, release)},
    CFG_END,
};

static const struct cfg_key event_keys[] = {
    {.key = "at",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_event, at_ms),
     .required = true},
    {.key = "slave", .type = CFG_ID, .offset = offsetof(struct raw_event, slave)},
    {.key = "wearable", .type = CFG_STR, .offset = offsetof(struct raw_event, wearable)},
    {.key = "receiver", .type = CFG_ID, .offset = offsetof(struct raw_event, receiver)},
    {.key = "wifi_bed", .type = CFG_ID, .offset = offsetof(struct raw_event, wifi_bed)},
    {.key = "walk", .type = CFG_MAP, .offset = offsetof(struct raw_event, walk), .sub = walk_keys},
    {.key = "fault",
     .type = CFG_ENUM,
     .offset = offsetof(struct raw_event, fault),
     .enums = sim_fault_names},
    {.key = "exception_code",
     .type = CFG_INT,
     .offset = offsetof(struct raw_event, exception_code),
     .def = "4",
     .min = 1,
     .max = MODBUS_EXCEPTION_MAX - 1},
    {.key = "set", .type = CFG_MAP, .offset = offsetof(struct raw_event, set), .sub = set_keys},
    CFG_END,
};

#define SCENARIO_KEY                                                                               \
    {                                                                                              \
        .key = "scenario", .type = CFG_LIST, .offset = offsetof(struct raw_file, scenario),        \
        .sub = event_keys, .elem_size = sizeof(struct raw_event),                                  \
        .node_offset = offsetof(struct raw_event, node)                                            \
    }

static const struct cfg_enum rx_format_names[] = {
    {"omg", SIM_RX_OMG}, {"minew", SIM_RX_MINEW}, {"ingics", SIM_RX_INGICS}, {NULL, 0}};

static const struct cfg_key mqtt_keys[] = {
    {.key = "broker", .type = CFG_STR, .offset = offsetof(struct raw_mqtt, broker)},
    {.key = "client_id", .type = CFG_STR, .offset = offsetof(struct raw_mqtt, client_id)},
    CFG_END,
};

static const struct cfg_key zone_keys[] = {
    {.key = "id", .type = CFG_ID, .offset = offsetof(struct raw_zone, id), .required = true},
    {.key = "adjacent", .type = CFG_STRLIST, .offset = offsetof(struct raw_zone, adjacent)},
    CFG_END,
};

static const struct cfg_key receiver_keys[] = {
    {.key = "id", .type = CFG_ID, .offset = offsetof(struct raw_receiver, id), .required = true},
    {.key = "format",
     .type = CFG_ENUM,
     .offset = offsetof(struct raw_receiver, format),
     .required = true,
     .enums = rx_format_names},
    {.key = "zone",
     .type = CFG_ID,
     .offset = offsetof(struct raw_receiver, zone),
     .required = true},
    {.key = "topic", .type = CFG_STR, .offset = offsetof(struct raw_receiver, topic)},
    {.key = "interval",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_receiver, interval_ms),
     .def = "1s",
     .min = 100,
     .max = 60000},
    CFG_END,
};

static const struct cfg_key wearable_keys[] = {
    {.key = "mac", .type = CFG_STR, .offset = offsetof(struct raw_wearable, mac), .required = true},
    {.key = "resident",
     .type = CFG_ID,
     .offset = offsetof(struct raw_wearable, resident),
     .required = true},
    {.key = "home",
     .type = CFG_ID,
     .offset = offsetof(struct raw_wearable, home),
     .required = true},
    {.key = "interval",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_wearable, interval_ms),
     .def = "1s",
     .min = 100,
     .max = 600000},
    {.key = "battery",
     .type = CFG_FLOAT,
     .offset = offsetof(struct raw_wearable, battery),
     .def = "90",
     .min = 0,
     .max = 100},
    {.key = "hr",
     .type = CFG_FLOAT,
     .offset = offsetof(struct raw_wearable, hr),
     .def = "72",
     .min = 30,
     .max = 200},
    CFG_END,
};

static const struct cfg_key wifi_bed_keys[] = {
    {.key = "name",
     .type = CFG_ID,
     .offset = offsetof(struct raw_wifi_bed, name),
     .required = true},
    {.key = "topic",
     .type = CFG_STR,
     .offset = offsetof(struct raw_wifi_bed, topic),
     .required = true},
    {.key = "resident", .type = CFG_ID, .offset = offsetof(struct raw_wifi_bed, resident)},
    {.key = "interval",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_wifi_bed, interval_ms),
     .def = "5s",
     .min = 100,
     .max = 3600000},
    CFG_END,
};

static const struct cfg_key routine_keys[] = {
    {.key = "dining", .type = CFG_ID, .offset = offsetof(struct raw_routine, dining)},
    {.key = "walk", .type = CFG_STRLIST, .offset = offsetof(struct raw_routine, walk)},
    CFG_END,
};

#define LIST_KEY(name, field, elem, keys)                                                          \
    {                                                                                              \
        .key = name, .type = CFG_LIST, .offset = offsetof(struct raw_file, field), .sub = keys,    \
        .elem_size = sizeof(struct elem), .node_offset = offsetof(struct elem, node)               \
    }

static const struct cfg_key file_keys[] = {
    {.key = "seed",
     .type = CFG_INT,
     .offset = offsetof(struct raw_file, seed),
     .def = "0",
     .min = 0,
     .max = 9007199254740991.0},
    {.key = "utc_offset_min",
     .type = CFG_INT,
     .offset = offsetof(struct raw_file, utc_offset_min),
     .def = "480",
     .min = -720,
     .max = 840},
    /* optional since a simulator may run MQTT devices only; one of the two
     * kinds is required (checked in sim_config_load) */
    LIST_KEY("endpoints", endpoints, raw_endpoint, endpoint_keys),
    LIST_KEY("slaves", slaves, raw_slave, slave_keys),
    SCENARIO_KEY,
    {.key = "mqtt", .type = CFG_MAP, .offset = offsetof(struct raw_file, mqtt), .sub = mqtt_keys},
    {.key = "start_at", .type = CFG_STR, .offset = offsetof(struct raw_file, start_at)},
    LIST_KEY("zones", zones, raw_zone, zone_keys),
    LIST_KEY("receivers", receivers, raw_receiver, receiver_keys),
    LIST_KEY("wearables", wearables, raw_wearable, wearable_keys),
    LIST_KEY("wifi_beds", wifi_beds, raw_wifi_bed, wifi_bed_keys),
    {.key = "routine",
     .type = CFG_MAP,
     .offset = offsetof(struct raw_file, routine),
     .sub = routine_keys},
    CFG_END,
};

/* A --scenario file holds only the scenario list (into the same struct). */
static const struct cfg_key scenario_file_keys[] = {
    SCENARIO_KEY,
    CFG_END,
};

static bool has(struct fy_node *map, const char *key)
{
    return map && fy_node_mapping_lookup_by_string(map, key, FY_NT) != NULL;
}

static bool standard_baud(int64_t b)
{
    static const int64_t rates[] = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200};
    for (size_t i = 0; i < CH_ARRAY_LEN(rates); i++)
        if (rates[i] == b)
            return true;
    return false;
}

/* Splits "host:port" or "[v6]:port"; both parts heap-allocated. */
static bool split_host_port(const char *s, char **host, char **port)
{
    const char *colon;
    size_t hlen;
    const char *h = s;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return false;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return false;
        hlen = (size_t)(colon - s);
    }
    long long p;
    if (hlen == 0 || ch_parse_int(colon + 1, &p) != 0 || p < 1 || p > 65535)
        return false;
    *host = ch_xmalloc(hlen + 1);
    memcpy(*host, h, hlen);
    (*host)[hlen] = '\0';
    *port = ch_xstrdup(colon + 1);
    return true;
}

static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

struct build {
    struct sim_config *out;
    int errors;
    /* per raw slave: its replicas are out->slaves[first .. first + count) */
    size_t *group_first, *group_count;
    const struct raw_slave *raw_slaves;
    size_t nraw_slaves;
};

static void endpoints_build(struct build *b, const struct cfg_list *list, bool allow_any)
{
    const struct raw_endpoint *raw = list->items;
    b->out->endpoints = ch_xcalloc(list->n, sizeof *b->out->endpoints);
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_endpoint *r = &raw[i];
        struct sim_endpoint_conf *e = &b->out->endpoints[b->out->nendpoints++];
        e->id = ch_xstrdup(r->id);
        e->baud = (int)r->baud;
        e->parity = (char)r->parity;
        e->data_bits = (int)r->data_bits;
        e->stop_bits = (int)r->stop_bits;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(raw[j].id, r->id) == 0) {
                cfg_report(r->node, "id", "endpoint id '%s' is used twice", r->id);
                b->errors++;
            }
        }
        if ((r->tcp != NULL) + (r->rtu != NULL) + (r->radar != NULL) != 1) {
            cfg_report(r->node, NULL,
                       "endpoint '%s' needs exactly one of 'tcp' or 'rtu' (or 'radar' for a "
                       "sleep radar)",
                       r->id);
            b->errors++;
            continue;
        }
        if (r->rtu || r->radar) {
            e->transport = r->rtu ? SIM_RTU : SIM_RADAR;
            e->path = ch_xstrdup(r->rtu ? r->rtu : r->radar);
            if (r->radar && !has(r->node, "baud"))
                e->baud = 115200; /* what R60ABD1-family radars speak */
            if (!standard_baud(r->baud)) {
                cfg_report(r->node, "baud",
                           "key 'baud': %lld is not a standard rate (1200 2400 4800 9600 "
                           "19200 38400 57600 115200)",
                           (long long)r->baud);
                b->errors++;
            }
            continue;
        }
        e->transport = SIM_TCP;
        static const char *const serial_keys[] = {"baud", "parity", "data_bits", "stop_bits"};
        for (size_t k = 0; k < CH_ARRAY_LEN(serial_keys); k++) {
            if (has(r->node, serial_keys[k])) {
                cfg_report(r->node, serial_keys[k],
                           "key '%s' is for 'rtu' endpoints only (and 'radar' ones)",
                           serial_keys[k]);
                b->errors++;
            }
        }
        if (!split_host_port(r->tcp, &e->host, &e->port)) {
            cfg_report(r->node, "tcp",
                       "key 'tcp': '%s' is not HOST:PORT (e.g. 127.0.0.1:15020 or [::1]:15020)",
                       r->tcp);
            b->errors++;
        } else if (!allow_any && !is_loopback(e->host)) {
            cfg_report(r->node, "tcp",
                       "key 'tcp': '%s' is not a loopback address; simulated devices listen on "
                       "127.0.0.1, localhost or ::1 unless care-sim runs with "
                       "--allow-any-address",
                       e->host);
            b->errors++;
        }
    }
}

static bool endpoint_find(const struct sim_config *c, const char *id, size_t *out)
{
    for (size_t i = 0; i < c->nendpoints; i++) {
        if (strcmp(c->endpoints[i].id, id) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static void slaves_build(struct build *b, const struct cfg_list *list)
{
    struct sim_config *c = b->out;
    const struct raw_slave *raw = list->items;
    size_t total = 0;
    for (size_t i = 0; i < list->n; i++)
        total += (size_t)raw[i].count;
    c->slaves = ch_xcalloc(total, sizeof *c->slaves);
    b->raw_slaves = raw;
    b->nraw_slaves = list->n;
    b->group_first = ch_xcalloc(list->n, sizeof *b->group_first);
    b->group_count = ch_xcalloc(list->n, sizeof *b->group_count);
    /* owner[endpoint * 256 + unit] = index + 1 of the slave holding that unit */
    size_t *owner = ch_xcalloc(c->nendpoints * 256, sizeof *owner);

    for (size_t i = 0; i < list->n; i++) {
        const struct raw_slave *r = &raw[i];
        size_t ep;
        const struct sim_model *model = sim_model_find(r->model);
        b->group_first[i] = c->nslaves;
        if (!endpoint_find(c, r->endpoint, &ep)) {
            cfg_report(r->node, "endpoint", "key 'endpoint': no endpoint has id '%s'", r->endpoint);
            b->errors++;
            continue;
        }
        if (!model) {
            char names[256], radars[64];
            sim_model_names(names, sizeof names);
            sim_model_radar_names(radars, sizeof radars);
            cfg_report(r->node, "model",
                       "key 'model': unknown model '%s' (models: %s); on a 'radar' endpoint: %s",
                       r->model, names, radars);
            b->errors++;
            continue;
        }
        if (model->radar != (c->endpoints[ep].transport == SIM_RADAR)) {
            cfg_report(r->node, "model",
                       model->radar
                           ? "key 'model': '%s' is a radar; it goes on a 'radar' endpoint, "
                             "not on '%s'"
                           : "key 'model': '%s' is not a radar; endpoint '%s' is a radar "
                             "line",
                       r->model, r->endpoint);
            b->errors++;
            continue;
        }
        if (model->radar) {
            bool taken = false;
            for (size_t j = 0; j < c->nslaves && !taken; j++) {
                if (c->slaves[j].endpoint == ep) {
                    cfg_report(r->node, "endpoint",
                               "key 'endpoint': radar line '%s' already carries '%s' (one radar "
                               "per line)",
                               r->endpoint, c->slaves[j].name);
                    b->errors++;
                    taken = true;
                }
            }
            if (taken)
                continue;
            if (r->count != 1) {
                cfg_report(r->node, "count", "key 'count': a radar line carries one radar");
                b->errors++;
                continue;
            }
        }
        int64_t unit = has(r->node, "unit") ? r->unit : model->default_unit;
        if (unit + r->count - 1 > 255) {
            cfg_report(r->node, "count", "key 'count': units %lld..%lld go past 255",
                       (long long)unit, (long long)(unit + r->count - 1));
            b->errors++;
            continue;
        }
        for (int64_t k = 0; k < r->count; k++) {
            char name[128];
            if (r->count == 1)
                ch_strlcpy(name, r->name, sizeof name);
            else
                snprintf(name, sizeof name, "%s-%lld", r->name, (long long)k + 1);
            if (!ch_valid_id(name)) {
                cfg_report(r->node, "name", "key 'name': replica name '%s' is longer than 64",
                           name);
                b->errors++;
                break;
            }
            bool dup = false;
            for (size_t j = 0; j < c->nslaves && !dup; j++)
                dup = strcmp(c->slaves[j].name, name) == 0;
            if (dup) {
                cfg_report(r->node, "name", "slave name '%s' is used twice", name);
                b->errors++;
                break;
            }
            uint8_t u = (uint8_t)(unit + k);
            size_t *slot = &owner[ep * 256 + u];
            if (*slot) {
                cfg_report(r->node, has(r->node, "unit") ? "unit" : "name",
                           "unit %u on endpoint '%s' is already taken by slave '%s'", u,
                           r->endpoint, c->slaves[*slot - 1].name);
                b->errors++;
                break;
            }
            struct sim_slave_conf *s = &c->slaves[c->nslaves++];
            s->name = ch_xstrdup(name);
            s->endpoint = ep;
            s->unit = u;
            s->model = model;
            *slot = c->nslaves;
            b->group_count[i]++;
        }
    }
    free(owner);
}

/* Finds the slaves an event names: one by its exact name, or all replicas of
 * a group. A slave that was itself in error has no replicas (*count 0). */
static bool event_targets(const struct build *b, const char *name, size_t *first, size_t *count)
{
    for (size_t i = 0; i < b->out->nslaves; i++) {
        if (strcmp(b->out->slaves[i].name, name) == 0) {
            *first = i;
            *count = 1;
            return true;
        }
    }
    for (size_t i = 0; i < b->nraw_slaves; i++) {
        if (strcmp(b->raw_slaves[i].name, name) == 0) {
            *first = b->group_first[i];
            *count = b->group_count[i];
            return true;
        }
    }
    return false;
}

/* Checks a `set:` mapping; fills *set except at_ms. */
static bool set_parse(struct build *b, const struct raw_event *r, struct sim_set *set)
{
    struct fy_node *sn = fy_node_mapping_lookup_by_string(r->node, "set", FY_NT);
    const struct raw_set *rs = &r->set;
    if (!rs->metric) {
        cfg_report(sn, NULL, "key 'set': needs 'metric'");
        b->errors++;
        return false;
    }
    bool value = has(sn, "value"), ramp = has(sn, "ramp_to"), pulse = has(sn, "pulse");
    if ((int)value + (int)ramp + (int)pulse + (int)rs->release != 1) {
        cfg_report(sn, NULL,
                   "key 'set': needs exactly one of 'value', 'ramp_to' (with 'over'), "
                   "'pulse' (with 'for') or 'release: true'");
        b->errors++;
        return false;
    }
    if (ramp != has(sn, "over")) {
        cfg_report(sn, "over", "key 'set': 'over' goes with 'ramp_to', and 'ramp_to' needs it");
        b->errors++;
        return false;
    }
    if (pulse != has(sn, "for")) {
        cfg_report(sn, "for", "key 'set': 'for' goes with 'pulse', and 'pulse' needs it");
        b->errors++;
        return false;
    }
    if (value) {
        set->kind = SIM_SET_VALUE;
        set->value = rs->value;
    } else if (ramp) {
        set->kind = SIM_SET_RAMP;
        set->value = rs->ramp_to;
        set->over_ms = rs->over_ms;
    } else if (pulse) {
        set->kind = SIM_SET_PULSE;
        set->value = rs->pulse;
        set->over_ms = rs->for_ms;
    } else {
        set->kind = SIM_SET_RELEASE;
    }
    return true;
}

/* A scenario value must be one the metric can show: a contact is 0 or 1,
 * a humidity 0..100. Returns false after reporting. */
static bool set_in_range(struct build *b, const struct raw_event *r, const struct sim_set *set,
                         const struct sim_metric *m)
{
    static const char *const keys[] = {[SIM_SET_VALUE] = "value",
                                       [SIM_SET_RAMP] = "ramp_to",
                                       [SIM_SET_RELEASE] = NULL,
                                       [SIM_SET_PULSE] = "pulse"};
    if (set->kind == SIM_SET_RELEASE || (set->value >= m->min && set->value <= m->max))
        return true;
    cfg_report(fy_node_mapping_lookup_by_string(r->node, "set", FY_NT), keys[set->kind],
               "key '%s': %g is outside what metric '%s' can show (%g..%g)", keys[set->kind],
               set->value, m->name, m->min, m->max);
    b->errors++;
    return false;
}

/* ---- the home's MQTT devices ------------------------------------------ */

static bool zone_find(const struct sim_config *c, const char *id, size_t *out)
{
    for (size_t i = 0; i < c->nzones; i++) {
        if (strcmp(c->zones[i].id, id) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

/* Reports a zone that is not in `zones:`; true when found. */
static bool zone_ref(struct build *b, struct fy_node *node, const char *key, const char *id,
                     size_t *out)
{
    if (zone_find(b->out, id, out))
        return true;
    cfg_report(node, key, "key '%s': no zone has id '%s' (see 'zones:')", key, id);
    b->errors++;
    return false;
}

static void zones_build(struct build *b, const struct cfg_list *list)
{
    struct sim_config *c = b->out;
    const struct raw_zone *raw = list->items;
    if (list->n > SIM_MAX_ZONES) {
        cfg_report(raw[SIM_MAX_ZONES].node, "id", "at most %d zones", SIM_MAX_ZONES);
        b->errors++;
        return;
    }
    c->zones = ch_xcalloc(list->n ? list->n : 1, sizeof *c->zones);
    for (size_t i = 0; i < list->n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(raw[j].id, raw[i].id) == 0) {
                cfg_report(raw[i].node, "id", "zone id '%s' is used twice", raw[i].id);
                b->errors++;
            }
        }
        c->zones[i].id = ch_xstrdup(raw[i].id);
        c->zones[i].adjacent = ch_xcalloc(list->n, sizeof(bool));
    }
    c->nzones = list->n;
    /* adjacency once every id is known: a zone may name one defined below it */
    for (size_t i = 0; i < list->n; i++) {
        char *const *adj = raw[i].adjacent.items;
        for (size_t k = 0; k < raw[i].adjacent.n; k++) {
            size_t z;
            if (!zone_ref(b, raw[i].node, "adjacent", adj[k], &z))
                continue;
            if (z == i) {
                cfg_report(raw[i].node, "adjacent", "key 'adjacent': zone '%s' names itself",
                           raw[i].id);
                b->errors++;
                continue;
            }
            c->zones[i].adjacent[z] = c->zones[z].adjacent[i] = true;
        }
    }
}

static void receivers_build(struct build *b, const struct cfg_list *list)
{
    struct sim_config *c = b->out;
    const struct raw_receiver *raw = list->items;
    c->receivers = ch_xcalloc(list->n ? list->n : 1, sizeof *c->receivers);
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_receiver *r = &raw[i];
        struct sim_receiver_conf *rc = &c->receivers[c->nreceivers];
        for (size_t j = 0; j < i; j++) {
            if (strcmp(raw[j].id, r->id) == 0) {
                cfg_report(r->node, "id", "receiver id '%s' is used twice", r->id);
                b->errors++;
            }
        }
        uint8_t mac[6];
        char norm[BLE_RECEIVER_MAX];
        /* Ingics lines carry the gateway's MAC; the edge reads no other id */
        if (r->format == SIM_RX_INGICS && !ble_mac_parse(r->id, strlen(r->id), mac)) {
            cfg_report(r->node, "id",
                       "key 'id': an ingics receiver is named by its MAC (AC233FA00101), not "
                       "'%s'",
                       r->id);
            b->errors++;
            continue;
        }
        if (!ble_receiver_norm(r->id, strlen(r->id), norm)) {
            cfg_report(r->node, "id",
                       "key 'id': '%s' is not a receiver name care-edge accepts (letters, "
                       "digits, _ . : -; at most %d)",
                       r->id, BLE_RECEIVER_MAX - 1);
            b->errors++;
            continue;
        }
        size_t zone;
        if (!zone_ref(b, r->node, "zone", r->zone, &zone))
            continue;
        rc->id = ch_xstrdup(r->id);
        rc->format = (enum sim_rx_format)r->format;
        rc->zone = zone;
        rc->interval_ms = r->interval_ms;
        if (r->topic) {
            rc->topic = ch_xstrdup(r->topic);
        } else {
            /* each vendor's default topic layout, as the edge's adapters expect */
            char t[200];
            if (rc->format == SIM_RX_OMG)
                snprintf(t, sizeof t, "home/%s/BTtoMQTT", r->id);
            else if (rc->format == SIM_RX_MINEW)
                snprintf(t, sizeof t, "gw/%s/status", r->id);
            else
                snprintf(t, sizeof t, "ingics/%s", r->id);
            rc->topic = ch_xstrdup(t);
        }
        c->nreceivers++;
    }
}

static void wifi_beds_build(struct build *b, const struct cfg_list *list)
{
    struct sim_config *c = b->out;
    const struct raw_wifi_bed *raw = list->items;
    c->wifi_beds = ch_xcalloc(list->n ? list->n : 1, sizeof *c->wifi_beds);
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_wifi_bed *r = &raw[i];
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(raw[j].name, r->name) == 0;
        for (size_t j = 0; j < c->nslaves && !dup; j++)
            dup = strcmp(c->slaves[j].name, r->name) == 0;
        if (dup) {
            /* the name keys the simulated values: two devices would show the same */
            cfg_report(r->node, "name", "device name '%s' is used twice", r->name);
            b->errors++;
            continue;
        }
        struct sim_wifi_bed_conf *w = &c->wifi_beds[c->nwifi_beds++];
        w->name = ch_xstrdup(r->name);
        w->topic = ch_xstrdup(r->topic);
        w->resident = r->resident ? ch_xstrdup(r->resident) : NULL;
        w->interval_ms = r->interval_ms;
    }
}

static void wearables_build(struct build *b, const struct cfg_list *list)
{
    struct sim_config *c = b->out;
    const struct raw_wearable *raw = list->items;
    c->wearables = ch_xcalloc(list->n ? list->n : 1, sizeof *c->wearables);
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_wearable *r = &raw[i];
        struct sim_wearable_conf *w = &c->wearables[c->nwearables];
        if (!ble_mac_parse(r->mac, strlen(r->mac), w->mac)) {
            cfg_report(r->node, "mac", "key 'mac': '%s' is not a MAC (C3:00:00:00:01:01)", r->mac);
            b->errors++;
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < c->nwearables && !dup; j++) {
            if (memcmp(c->wearables[j].mac, w->mac, 6) == 0) {
                cfg_report(r->node, "mac", "key 'mac': %s is used twice", r->mac);
                dup = true;
            } else if (strcmp(c->wearables[j].resident, r->resident) == 0) {
                /* scenario events name wearables by resident */
                cfg_report(r->node, "resident", "key 'resident': '%s' already has a wearable",
                           r->resident);
                dup = true;
            }
        }
        size_t home;
        if (dup) {
            b->errors++;
            continue;
        }
        if (!zone_ref(b, r->node, "home", r->home, &home))
            continue;
        snprintf(w->mac_str, sizeof w->mac_str, "%02X:%02X:%02X:%02X:%02X:%02X", w->mac[0],
                 w->mac[1], w->mac[2], w->mac[3], w->mac[4], w->mac[5]);
        w->resident = ch_xstrdup(r->resident);
        w->home = home;
        w->interval_ms = r->interval_ms;
        w->battery = r->battery;
        w->hr = r->hr;
        w->bed = -1;
        for (size_t k = 0; k < c->nwifi_beds; k++)
            if (c->wifi_beds[k].resident && strcmp(c->wifi_beds[k].resident, r->resident) == 0)
                w->bed = (long)k;
        c->nwearables++;
    }
}

static void routine_build(struct build *b, const struct raw_routine *r, struct fy_node *root)
{
    struct sim_config *c = b->out;
    struct fy_node *node = fy_node_mapping_lookup_by_string(root, "routine", FY_NT);
    size_t z;
    c->routine.dining = -1;
    if (r->dining && zone_ref(b, node, "dining", r->dining, &z))
        c->routine.dining = (long)z;
    char *const *walk = r->walk.items;
    c->routine.walk = ch_xcalloc(r->walk.n ? r->walk.n : 1, sizeof *c->routine.walk);
    for (size_t i = 0; i < r->walk.n; i++)
        if (zone_ref(b, node, "walk", walk[i], &z))
            c->routine.walk[c->routine.nwalk++] = z;
}

/* "HH:MM" or "HH:MM:SS" into seconds of the day. */
static bool parse_clock(const char *s, int *out)
{
    unsigned h, m, sec = 0;
    char tail;
    int n = sscanf(s, "%2u:%2u:%2u%c", &h, &m, &sec, &tail);
    if ((n != 2 && n != 3) || h > 23 || m > 59 || sec > 59)
        return false;
    *out = (int)(h * 3600 + m * 60 + sec);
    return true;
}

static void home_build(struct build *b, const struct raw_file *raw, struct fy_node *root,
                       bool allow_any)
{
    struct sim_config *c = b->out;
    zones_build(b, &raw->zones);
    receivers_build(b, &raw->receivers);
    wifi_beds_build(b, &raw->wifi_beds);
    wearables_build(b, &raw->wearables);
    routine_build(b, &raw->routine, root);
    if (raw->start_at) {
        if (parse_clock(raw->start_at, &c->start_at_s)) {
            c->has_start_at = true;
        } else {
            cfg_report(root, "start_at", "key 'start_at': '%s' is not a time of day (03:00)",
                       raw->start_at);
            b->errors++;
        }
    }
    bool devices = raw->receivers.n || raw->wearables.n || raw->wifi_beds.n;
    if (!raw->mqtt.broker) {
        if (devices) {
            cfg_report(root, "mqtt",
                       "receivers, wearables and Wi-Fi beds publish over MQTT: add 'mqtt: "
                       "{broker: tcp://127.0.0.1:1883}'");
            b->errors++;
        }
        return;
    }
    struct fy_node *mn = fy_node_mapping_lookup_by_string(root, "mqtt", FY_NT);
    const char *uri = raw->mqtt.broker, *hp = strstr(uri, "://");
    char *host = NULL, *port = NULL;
    if (!hp || strncmp(uri, "tcp://", 6) != 0 || !split_host_port(hp + 3, &host, &port)) {
        cfg_report(mn, "broker", "key 'broker': '%s' is not tcp://HOST:PORT", uri);
        b->errors++;
    } else if (!allow_any && !is_loopback(host)) {
        cfg_report(mn, "broker",
                   "key 'broker': '%s' is not a loopback address; care-sim publishes to "
                   "127.0.0.1, localhost or ::1 unless it runs with --allow-any-address",
                   host);
        b->errors++;
    }
    free(host);
    free(port);
    c->mqtt_broker = ch_xstrdup(uri);
    c->mqtt_client_id = ch_xstrdup(raw->mqtt.client_id ? raw->mqtt.client_id : "care-sim");
}

static bool wearable_find(const struct sim_config *c, const char *name, size_t *out)
{
    uint8_t mac[6];
    bool is_mac = ble_mac_parse(name, strlen(name), mac);
    for (size_t i = 0; i < c->nwearables; i++) {
        if (is_mac ? memcmp(c->wearables[i].mac, mac, 6) == 0
                   : strcmp(c->wearables[i].resident, name) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static bool receiver_find(const struct sim_config *c, const char *id, size_t *out)
{
    for (size_t i = 0; i < c->nreceivers; i++) {
        if (strcmp(c->receivers[i].id, id) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static bool wifi_bed_find(const struct sim_config *c, const char *name, size_t *out)
{
    for (size_t i = 0; i < c->nwifi_beds; i++) {
        if (strcmp(c->wifi_beds[i].name, name) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

/* The metrics of a set event's target: a slave's model, the bed-mb model
 * for a Wi-Fi bed (it shows the same values), or a wearable's. */
static void target_metrics(enum sim_target t, const struct sim_model *slave_model,
                           const struct sim_metric *const **metrics, size_t *n, const char **what)
{
    if (t == SIM_TARGET_WEARABLE) {
        *metrics = sim_wearable_metrics;
        *n = SIM_WEAR_METRICS;
        *what = "a wearable";
        return;
    }
    const struct sim_model *m = t == SIM_TARGET_WIFI_BED ? sim_model_find("bed-mb") : slave_model;
    *metrics = m->metrics;
    *n = m->nmetrics;
    *what = t == SIM_TARGET_WIFI_BED ? "a Wi-Fi bed" : NULL;
}

static void event_add(struct sim_config *c, const struct sim_event_conf *ev)
{
    c->events = ch_xrealloc(c->events, (c->nevents + 1) * sizeof *c->events);
    c->events[c->nevents++] = *ev;
}

/* Finds what an event acts on: exactly one of slave, wearable, receiver or
 * wifi_bed. Returns false after reporting; *count 0 for a slave group that
 * was itself in error (already reported). */
static bool event_target(struct build *b, const struct raw_event *r, enum sim_target *t,
                         size_t *first, size_t *count)
{
    const char *names[] = {r->slave, r->wearable, r->receiver, r->wifi_bed};
    static const char *const keys[] = {"slave", "wearable", "receiver", "wifi_bed"};
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (names[i]) {
            n++;
            *t = (enum sim_target)i;
        }
    if (n != 1) {
        cfg_report(r->node, NULL,
                   "an event names exactly one of 'slave', 'wearable', 'receiver' or "
                   "'wifi_bed'");
        b->errors++;
        return false;
    }
    const char *name = names[*t];
    bool found;
    *count = 1;
    switch (*t) {
    case SIM_TARGET_SLAVE:
        found = event_targets(b, name, first, count);
        break;
    case SIM_TARGET_WEARABLE:
        found = wearable_find(b->out, name, first);
        break;
    case SIM_TARGET_RECEIVER:
        found = receiver_find(b->out, name, first);
        break;
    default:
        found = wifi_bed_find(b->out, name, first);
        break;
    }
    if (!found) {
        static const char *const what[] = {"slave or replicated group is named",
                                           "wearable has the resident or MAC",
                                           "receiver has the id", "Wi-Fi bed is named"};
        cfg_report(r->node, keys[*t], "key '%s': no %s '%s'", keys[*t], what[*t], name);
        b->errors++;
    }
    return found;
}

/* Reads a `walk:` of a wearable event into ev. */
static bool walk_parse(struct build *b, const struct raw_event *r, struct sim_event_conf *ev)
{
    struct fy_node *wn = fy_node_mapping_lookup_by_string(r->node, "walk", FY_NT);
    if (!r->walk.release == !r->walk.to) {
        cfg_report(wn, NULL, "key 'walk': needs exactly one of 'to' (a zone) or 'release: true'");
        b->errors++;
        return false;
    }
    ev->kind = SIM_EVENT_WALK;
    ev->walk = (struct sim_walk){
        .at_ms = r->at_ms, .over_ms = r->walk.over_ms, .release = r->walk.release};
    return r->walk.release || zone_ref(b, wn, "to", r->walk.to, &ev->walk.to);
}

static void events_build(struct build *b, const struct cfg_list *list)
{
    const struct raw_event *raw = list->items;
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_event *r = &raw[i];
        size_t first, count;
        enum sim_target target = SIM_TARGET_SLAVE;
        if (!event_target(b, r, &target, &first, &count))
            continue;
        if (count == 0)
            continue; /* already reported at the slave */
        bool fault = has(r->node, "fault"), set = has(r->node, "set"), walk = has(r->node, "walk");
        const struct sim_model *model =
            target == SIM_TARGET_SLAVE ? b->out->slaves[first].model : NULL;
        static const char *const allowed[] = {
            [SIM_TARGET_SLAVE] = "exactly one of 'fault' or 'set'",
            [SIM_TARGET_WEARABLE] = "exactly one of 'set' or 'walk'",
            [SIM_TARGET_RECEIVER] = "'fault' (none or silent)",
            [SIM_TARGET_WIFI_BED] = "exactly one of 'fault' (none or silent) or 'set'",
        };
        bool ok = (int)fault + (int)set + (int)walk == 1;
        if (target == SIM_TARGET_WEARABLE)
            ok = ok && !fault;
        else
            ok = ok && !walk;
        if (target == SIM_TARGET_RECEIVER)
            ok = ok && fault;
        if (!ok) {
            cfg_report(r->node, NULL, "an event on a %s needs %s",
                       target == SIM_TARGET_SLAVE      ? "slave"
                       : target == SIM_TARGET_WEARABLE ? "wearable"
                       : target == SIM_TARGET_RECEIVER ? "receiver"
                                                       : "Wi-Fi bed",
                       allowed[target]);
            b->errors++;
            continue;
        }
        /* receivers and Wi-Fi beds publish or stay quiet: no Modbus exceptions,
         * no corrupt frames */
        bool mqtt_dev = target == SIM_TARGET_RECEIVER || target == SIM_TARGET_WIFI_BED;
        if (fault && mqtt_dev && r->fault != SIM_FAULT_NONE && r->fault != SIM_FAULT_SILENT) {
            cfg_report(r->node, "fault", "key 'fault': a %s can be 'silent' or 'none'",
                       target == SIM_TARGET_RECEIVER ? "receiver" : "Wi-Fi bed");
            b->errors++;
            continue;
        }
        if (fault && r->fault == SIM_FAULT_EXCEPTION && model && model->radar) {
            cfg_report(r->node, "fault",
                       "key 'fault': a radar has no Modbus exceptions (none, silent, garbage)");
            b->errors++;
            continue;
        }
        if (has(r->node, "exception_code") && !(fault && r->fault == SIM_FAULT_EXCEPTION)) {
            cfg_report(r->node, "exception_code",
                       "key 'exception_code' goes with 'fault: exception' only");
            b->errors++;
            continue;
        }
        struct sim_event_conf ev = {.at_ms = r->at_ms, .target = target};
        if (walk) {
            if (!walk_parse(b, r, &ev))
                continue;
        } else if (fault) {
            ev.kind = SIM_EVENT_FAULT;
            ev.fault = (struct sim_fault_ev){.at_ms = r->at_ms,
                                             .fault = (enum sim_fault)r->fault,
                                             .exception_code = (uint8_t)r->exception_code};
        } else {
            ev.kind = SIM_EVENT_SET;
            if (!set_parse(b, r, &ev.set))
                continue;
            ev.set.at_ms = r->at_ms;
            const struct sim_metric *const *metrics;
            size_t nmetrics;
            const char *what;
            target_metrics(target, model, &metrics, &nmetrics, &what);
            int metric = -1;
            for (size_t k = 0; k < nmetrics; k++)
                if (strcmp(metrics[k]->name, r->set.metric) == 0)
                    metric = (int)k;
            if (metric < 0) {
                char names[128] = "";
                size_t off = 0;
                for (size_t k = 0; k < nmetrics && off < sizeof names; k++)
                    off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", k ? " " : "",
                                            metrics[k]->name);
                struct fy_node *sn = fy_node_mapping_lookup_by_string(r->node, "set", FY_NT);
                if (what)
                    cfg_report(sn, "metric", "key 'metric': %s has no metric '%s' (it has: %s)",
                               what, r->set.metric, names);
                else if (nmetrics)
                    cfg_report(sn, "metric",
                               "key 'metric': model '%s' has no metric '%s' (it has: %s)",
                               model->name, r->set.metric, names);
                else
                    cfg_report(sn, "metric",
                               "key 'metric': model '%s' has no metrics to set (its outputs are "
                               "driven over Modbus)",
                               model->name);
                b->errors++;
                continue;
            }
            if (!set_in_range(b, r, &ev.set, metrics[metric]))
                continue;
            ev.metric = (size_t)metric;
        }
        for (size_t k = 0; k < count; k++) {
            ev.slave = first + k;
            event_add(b->out, &ev);
        }
    }
}

/* Stable sort by time, so events at the same time keep file order. */
static void events_sort(struct sim_config *c)
{
    for (size_t i = 1; i < c->nevents; i++) {
        struct sim_event_conf ev = c->events[i];
        size_t j = i;
        for (; j > 0 && c->events[j - 1].at_ms > ev.at_ms; j--)
            c->events[j] = c->events[j - 1];
        c->events[j] = ev;
    }
}

int sim_config_load(const char *path, const char *scenario_path, bool allow_any_address,
                    struct sim_config *out)
{
    memset(out, 0, sizeof *out);
    struct raw_file raw = {0}, raw_scn = {0};
    struct cfg_file *file = NULL, *scn_file = NULL;
    int rc = cfg_load(path, file_keys, &raw, &file);
    if (rc == 0 && scenario_path)
        rc = cfg_load(scenario_path, scenario_file_keys, &raw_scn, &scn_file);
    if (rc == 0) {
        struct build b = {.out = out};
        out->seed = (uint64_t)raw.seed;
        out->utc_offset_min = (int)raw.utc_offset_min;
        endpoints_build(&b, &raw.endpoints, allow_any_address);
        slaves_build(&b, &raw.slaves);
        home_build(&b, &raw, cfg_file_root(file), allow_any_address);
        if (raw.endpoints.n + raw.wearables.n + raw.wifi_beds.n + raw.receivers.n == 0) {
            cfg_report(cfg_file_root(file), NULL,
                       "nothing to simulate: add 'endpoints' and 'slaves' (Modbus, radars), or "
                       "'wearables', 'receivers' or 'wifi_beds' (MQTT)");
            b.errors++;
        }
        events_build(&b, &raw.scenario);
        events_build(&b, &raw_scn.scenario);
        events_sort(out);
        free(b.group_first);
        free(b.group_count);
        if (b.errors) {
            LOGE("sim", NULL, "%s%s%s: %d error%s", path, scenario_path ? " + " : "",
                 scenario_path ? scenario_path : "", b.errors, b.errors == 1 ? "" : "s");
            rc = CH_ECONFIG;
        }
    }
    cfg_file_close(file);
    cfg_file_close(scn_file);
    cfg_free(file_keys, &raw);
    cfg_free(scenario_file_keys, &raw_scn);
    return rc;
}

void sim_config_free(struct sim_config *c)
{
    for (size_t i = 0; i < c->nendpoints; i++) {
        free(c->endpoints[i].id);
        free(c->endpoints[i].host);
        free(c->endpoints[i].port);
        free(c->endpoints[i].path);
    }
    for (size_t i = 0; i < c->nslaves; i++)
        free(c->slaves[i].name);
    for (size_t i = 0; i < c->nzones; i++)
        free(c->zones[i].adjacent), free(c->zones[i].id);
    for (size_t i = 0; i < c->nreceivers; i++)
        free(c->receivers[i].id), free(c->receivers[i].topic);
    for (size_t i = 0; i < c->nwearables; i++)
        free(c->wearables[i].resident);
    for (size_t i = 0; i < c->nwifi_beds; i++)
        free(c->wifi_beds[i].name), free(c->wifi_beds[i].topic), free(c->wifi_beds[i].resident);
    free(c->zones);
    free(c->receivers);
    free(c->wearables);
    free(c->wifi_beds);
    free(c->routine.walk);
    free(c->mqtt_broker);
    free(c->mqtt_client_id);
    free(c->endpoints);
    free(c->slaves);
    free(c->events);
    memset(c, 0, sizeof *c);
}
