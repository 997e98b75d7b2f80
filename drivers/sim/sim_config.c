#include "sim_config.h"

#include "cfg.h"
#include "err.h"
#include "log.h"
#include "util.h"

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

struct raw_event {
    int64_t at_ms;
    char *slave;
    int fault;
    int64_t exception_code;
    struct raw_set set;
    struct fy_node *node;
};

struct raw_file {
    int64_t seed, utc_offset_min;
    struct cfg_list endpoints, slaves, scenario;
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

static const struct cfg_key event_keys[] = {
    {.key = "at",
     .type = CFG_DURATION,
     .offset = offsetof(struct raw_event, at_ms),
     .required = true},
    {.key = "slave", .type = CFG_ID, .offset = offsetof(struct raw_event, slave), .required = true},
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
    {.key = "endpoints",
     .type = CFG_LIST,
     .offset = offsetof(struct raw_file, endpoints),
     .required = true,
     .sub = endpoint_keys,
     .elem_size = sizeof(struct raw_endpoint),
     .node_offset = offsetof(struct raw_endpoint, node)},
    {.key = "slaves",
     .type = CFG_LIST,
     .offset = offsetof(struct raw_file, slaves),
     .required = true,
     .sub = slave_keys,
     .elem_size = sizeof(struct raw_slave),
     .node_offset = offsetof(struct raw_slave, node)},
    SCENARIO_KEY,
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

static void event_add(struct sim_config *c, const struct sim_event_conf *ev)
{
    c->events = ch_xrealloc(c->events, (c->nevents + 1) * sizeof *c->events);
    c->events[c->nevents++] = *ev;
}

static void events_build(struct build *b, const struct cfg_list *list)
{
    const struct raw_event *raw = list->items;
    for (size_t i = 0; i < list->n; i++) {
        const struct raw_event *r = &raw[i];
        size_t first, count;
        if (!event_targets(b, r->slave, &first, &count)) {
            cfg_report(r->node, "slave", "key 'slave': no slave or replicated group is named '%s'",
                       r->slave);
            b->errors++;
            continue;
        }
        if (count == 0)
            continue; /* already reported at the slave */
        bool fault = has(r->node, "fault"), set = has(r->node, "set");
        if (fault == set) {
            cfg_report(r->node, NULL, "an event needs exactly one of 'fault' or 'set'");
            b->errors++;
            continue;
        }
        if (fault && r->fault == SIM_FAULT_EXCEPTION && b->out->slaves[first].model->radar) {
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
        struct sim_event_conf ev = {.at_ms = r->at_ms};
        if (fault) {
            ev.kind = SIM_EVENT_FAULT;
            ev.fault = (struct sim_fault_ev){.at_ms = r->at_ms,
                                             .fault = (enum sim_fault)r->fault,
                                             .exception_code = (uint8_t)r->exception_code};
        } else {
            ev.kind = SIM_EVENT_SET;
            if (!set_parse(b, r, &ev.set))
                continue;
            ev.set.at_ms = r->at_ms;
            const struct sim_model *m = b->out->slaves[first].model; /* one model per group */
            int metric = sim_model_metric(m, r->set.metric);
            if (metric < 0) {
                char names[128] = "";
                size_t off = 0;
                for (size_t k = 0; k < m->nmetrics && off < sizeof names; k++)
                    off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", k ? " " : "",
                                            m->metrics[k]->name);
                if (m->nmetrics)
                    cfg_report(fy_node_mapping_lookup_by_string(r->node, "set", FY_NT), "metric",
                               "key 'metric': model '%s' has no metric '%s' (it has: %s)", m->name,
                               r->set.metric, names);
                else
                    cfg_report(fy_node_mapping_lookup_by_string(r->node, "set", FY_NT), "metric",
                               "key 'metric': model '%s' has no metrics to set (its outputs are "
                               "driven over Modbus)",
                               m->name);
                b->errors++;
                continue;
            }
            if (!set_in_range(b, r, &ev.set, m->metrics[metric]))
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
    free(c->endpoints);
    free(c->slaves);
    free(c->events);
    memset(c, 0, sizeof *c);
}
