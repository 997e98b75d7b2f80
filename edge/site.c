#include "site.h"
#include "notify.h"
#include "codec.h"
#include "driver.h"
#include "err.h"
#include "ble_rx.h"
#include "rules.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <libfyaml.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- profile files ---------------------------------------------------- */

/* One line per key: the tables read as the tables they are. */
/* clang-format off */
static const struct cfg_enum reg_types[] = {
    {"bool", REG_BOOL}, {"u16", REG_U16}, {"i16", REG_I16}, {"u32", REG_U32},
    {"i32", REG_I32}, {"f32", REG_F32}, {NULL, 0}};

static const struct cfg_enum reg_orders[] = {
    {"ABCD", ORDER_ABCD}, {"CDAB", ORDER_CDAB}, {"BADC", ORDER_BADC}, {"DCBA", ORDER_DCBA},
    {NULL, 0}};

#define R(k) offsetof(struct reg_def, k)
static const struct cfg_key reg_keys[] = {
    {.key = "metric",  .type = CFG_ID,    .offset = R(metric), .required = true},
    {.key = "fc",      .type = CFG_INT,   .offset = R(fc), .def = "3", .min = 1, .max = 4},
    {.key = "address", .type = CFG_INT,   .offset = R(address), .required = true, .min = 0, .max = 65535},
    {.key = "type",    .type = CFG_ENUM,  .offset = R(type), .def = "u16", .enums = reg_types},
    {.key = "order",   .type = CFG_ENUM,  .offset = R(order), .def = "ABCD", .enums = reg_orders},
    {.key = "bit",     .type = CFG_INT,   .offset = R(bit), .def = "-1", .min = -1, .max = 15},
    {.key = "scale",   .type = CFG_FLOAT, .offset = R(scale), .def = "1"},
    {.key = "offset",  .type = CFG_FLOAT, .offset = R(offset), .def = "0"},
    {.key = "unit",    .type = CFG_STR,   .offset = R(unit), .def = ""},
    CFG_END,
};
#undef R

#define M(k) offsetof(struct metric_def, k)
static const struct cfg_key metric_keys[] = {
    {.key = "metric", .type = CFG_ID,    .offset = M(metric), .required = true},
    {.key = "unit",   .type = CFG_STR,   .offset = M(unit), .def = ""},
    {.key = "field",  .type = CFG_STR,   .offset = M(field)},
    {.key = "scale",  .type = CFG_FLOAT, .offset = M(scale), .def = "1"},
    {.key = "offset", .type = CFG_FLOAT, .offset = M(offset), .def = "0"},
    CFG_END,
};
#undef M

#define P(k) offsetof(struct profile, k)
static const struct cfg_key profile_keys[] = {
    {.key = "profile",       .type = CFG_ID,   .offset = P(id), .required = true},
    {.key = "description",   .type = CFG_STR,  .offset = P(description), .def = ""},
    {.key = "measurement",   .type = CFG_ID,   .offset = P(measurement), .def = "environment"},
    {.key = "kind",          .type = CFG_ID,   .offset = P(kind), .def = "environment"},
    {.key = "max_gap",       .type = CFG_INT,  .offset = P(max_gap), .def = "8", .min = 0, .max = 100},
    {.key = "backoff_max",   .type = CFG_DURATION, .offset = P(backoff_max_ms), .def = "0s", .min = 0, .max = 86400000},
    {.key = "max_registers", .type = CFG_INT,  .offset = P(max_registers), .def = "125", .min = 1, .max = 125},
    {.key = "protocol",      .type = CFG_ENUM, .offset = P(protocol), .def = "modbus", .enums = driver_protocol_names},
    {.key = "registers",     .type = CFG_LIST, .offset = P(regs), .sub = reg_keys,
     .elem_size = sizeof(struct reg_def), .node_offset = offsetof(struct reg_def, node)},
    {.key = "metrics",       .type = CFG_LIST, .offset = P(metrics), .sub = metric_keys,
     .elem_size = sizeof(struct metric_def), .node_offset = offsetof(struct metric_def, node)},
    {.key = "ble",           .type = CFG_MAP,  .offset = P(ble), .sub = ble_profile_keys},
    CFG_END,
};
#undef P

/* ---- the site file ---------------------------------------------------- */

/* A bus: the keys every bus has here, the rest by its type from the driver
 * serving it (driver.h: driver_bus_variants). */
#define B(k) offsetof(struct bus_cfg, k)
const struct cfg_key site_bus_keys[] = {
    {.key = "id",          .type = CFG_ID,       .offset = B(id), .required = true},
    {.key = "type",        .type = CFG_ENUM,     .offset = B(type), .required = true, .enums = driver_bus_type_names},
    {.key = "backoff_max", .type = CFG_DURATION, .offset = B(backoff_max_ms), .def = "5m", .min = 1000, .max = 86400000},
    CFG_END,
};
#undef B

#define D(k) offsetof(struct device_cfg, k)
static const struct cfg_key device_keys[] = {
    {.key = "id",       .type = CFG_ID,       .offset = D(id), .required = true},
    {.key = "bus",      .type = CFG_ID,       .offset = D(bus), .required = true},
    {.key = "slave",    .type = CFG_INT,      .offset = D(slave), .def = "-1", .min = -1, .max = 255},
    {.key = "profile",  .type = CFG_ID,       .offset = D(profile), .required = true},
    {.key = "interval", .type = CFG_DURATION, .offset = D(interval_ms), .def = "10s", .min = 10, .max = 86400000},
    {.key = "room",     .type = CFG_ID,       .offset = D(room)},
    {.key = "topic",    .type = CFG_STR,      .offset = D(topic)},
    {.key = "mac",      .type = CFG_STR,      .offset = D(mac)},
    {.key = "name",     .type = CFG_NAME,     .offset = D(name)},
    {.key = "enabled",  .type = CFG_BOOL,     .offset = D(enabled), .def = "true"},
    CFG_END,
};
#undef D

static const struct cfg_enum deliveries[] = {
    {"hub", DELIVERY_HUB}, {"broker", DELIVERY_BROKER}, {NULL, 0}};

#define U(k) offsetof(struct uplink_cfg, k)
static const struct cfg_key uplink_keys[] = {
    {.key = "broker",         .type = CFG_STR,      .offset = U(broker), .required = true},
    {.key = "client_id",      .type = CFG_STR,      .offset = U(client_id)},
    {.key = "username",       .type = CFG_STR,      .offset = U(username)},
    {.key = "password",       .type = CFG_STR,      .offset = U(password)},
    {.key = "tls",            .type = CFG_MAP,      .offset = U(tls), .sub = cfg_tls_keys},
    {.key = "keepalive",      .type = CFG_DURATION, .offset = U(keepalive_ms), .def = "30s", .min = 5000, .max = 3600000},
    {.key = "batch_max",      .type = CFG_INT,      .offset = U(batch_max), .def = "500", .min = 1, .max = 10000},
    {.key = "batch_interval", .type = CFG_DURATION, .offset = U(batch_interval_ms), .def = "1s", .min = 10, .max = 600000},
    {.key = "max_inflight",   .type = CFG_INT,      .offset = U(max_inflight), .def = "20", .min = 1, .max = 1000},
    {.key = "reconnect_max",  .type = CFG_DURATION, .offset = U(reconnect_max_ms), .def = "30s", .min = 1000, .max = 3600000},
    {.key = "delivery",       .type = CFG_ENUM,     .offset = U(delivery), .def = "hub", .enums = deliveries},
    {.key = "hub_ack_timeout", .type = CFG_DURATION, .offset = U(hub_ack_timeout_ms), .def = "20s", .min = 1000, .max = 3600000},
    CFG_END,
};
#undef U

#define Q(k) offsetof(struct spool_cfg, k)
static const struct cfg_key spool_keys[] = {
    {.key = "dir",             .type = CFG_PATH,     .offset = Q(dir), .def = "/var/lib/carehub/spool"},
    {.key = "max_bytes",       .type = CFG_INT,      .offset = Q(max_bytes), .def = "268435456", .min = 65536, .max = 1099511627776.0},
    {.key = "commit_interval", .type = CFG_DURATION, .offset = Q(commit_interval_ms), .def = "1s", .min = 10, .max = 60000},
    {.key = "replay_rate",     .type = CFG_INT,      .offset = Q(replay_rate), .def = "2000", .min = 1, .max = 1000000},
    {.key = "memory_bytes",    .type = CFG_INT,      .offset = Q(memory_bytes), .def = "4194304", .min = 16384, .max = 1073741824},
    {.key = "retry_interval",  .type = CFG_DURATION, .offset = Q(retry_interval_ms), .def = "30s", .min = 1000, .max = 3600000},
    CFG_END,
};
#undef Q

static const struct cfg_enum priorities[] = {
    {"low", CH_PRIO_LOW}, {"medium", CH_PRIO_MEDIUM}, {"high", CH_PRIO_HIGH}, {NULL, 0}};

#define L(k) offsetof(struct rule_select, k)
static const struct cfg_key select_keys[] = {
    {.key = "kind",           .type = CFG_STRLIST, .offset = L(kinds)},
    {.key = "profile",        .type = CFG_STRLIST, .offset = L(profiles)},
    {.key = "device",         .type = CFG_STRLIST, .offset = L(devices)},
    {.key = "room",           .type = CFG_STRLIST, .offset = L(rooms)},
    {.key = "resident",       .type = CFG_STRLIST, .offset = L(residents)},
    {.key = "wandering_risk", .type = CFG_BOOL,    .offset = L(wandering_risk), .def = "false"},
    CFG_END,
};
#undef L

const struct cfg_enum rule_kinds[] = {
    {"other", KIND_OTHER},
    {"sos", KIND_SOS},
    {"fall", KIND_FALL},
    {"call", KIND_CALL},
    {"wandering", KIND_WANDERING},
    {"bed_exit", KIND_BED_EXIT},
    {"vital_signs", KIND_VITAL_SIGNS},
    {"inactivity", KIND_INACTIVITY},
    {"device_battery", KIND_DEVICE_BATTERY},
    {"device_offline", KIND_DEVICE_OFFLINE},
    {"air_quality", KIND_AIR_QUALITY},
    {"gas", KIND_GAS},
    {"smoke", KIND_SMOKE},
    {"temperature", KIND_TEMPERATURE},
    {"gateway", KIND_GATEWAY},
    {NULL, 0}};

static const struct cfg_enum locales[] = {{"en", LOCALE_EN}, {"zh-CN", LOCALE_ZH_CN}, {NULL, 0}};

const char *rule_kind_name(int kind)
{
    return cfg_enum_name(rule_kinds, kind);
}

const char *site_locale_name(int locale)
{
    return cfg_enum_name(locales, locale);
}

#define RU(k) offsetof(struct rule_cfg, k)
static const struct cfg_key rule_keys[] = {
    {.key = "id",           .type = CFG_ID,       .offset = RU(id), .required = true},
    {.key = "description",  .type = CFG_STR,      .offset = RU(description), .def = ""},
    {.key = "when",         .type = CFG_STR,      .offset = RU(when)},
    {.key = "clear",        .type = CFG_STR,      .offset = RU(clear)},
    {.key = "deadband",     .type = CFG_FLOAT,    .offset = RU(deadband), .def = "0", .min = 0, .max = 1e9},
    {.key = "for",          .type = CFG_DURATION, .offset = RU(on_delay_ms), .def = "0ms", .min = 0, .max = 86400000},
    {.key = "clear_for",    .type = CFG_DURATION, .offset = RU(off_delay_ms), .def = "0ms", .min = 0, .max = 86400000},
    {.key = "no_data",      .type = CFG_DURATION, .offset = RU(stale_ms), .def = "0ms", .min = 0, .max = 604800000},
    {.key = "window",       .type = CFG_STR,      .offset = RU(window)},
    {.key = "latch",        .type = CFG_BOOL,     .offset = RU(latch), .def = "false"},
    {.key = "priority",     .type = CFG_ENUM,     .offset = RU(priority), .def = "medium", .enums = priorities},
    {.key = "escalate",     .type = CFG_DURATION, .offset = RU(escalate_ms), .def = "0ms", .min = 0, .max = 86400000},
    {.key = "escalate_max", .type = CFG_INT,      .offset = RU(escalate_max), .def = "3", .min = 0, .max = 10},
    {.key = "kind",         .type = CFG_ENUM,     .offset = RU(kind), .def = "other", .enums = rule_kinds},
    {.key = "message",      .type = CFG_TEXT,     .offset = RU(message_text)},
    {.key = "select",       .type = CFG_MAP,      .offset = RU(select), .sub = select_keys},
    {.key = "params",       .type = CFG_PARAMS,   .offset = RU(params)},
    CFG_END,
};
#undef RU

static const struct cfg_key pack_keys[] = {
    {.key = "pack",        .type = CFG_ID,   .offset = offsetof(struct rule_pack, id), .required = true},
    {.key = "description", .type = CFG_STR,  .offset = offsetof(struct rule_pack, description), .def = ""},
    {.key = "rules",       .type = CFG_LIST, .offset = offsetof(struct rule_pack, rules), .required = true,
     .sub = rule_keys, .elem_size = sizeof(struct rule_cfg), .node_offset = offsetof(struct rule_cfg, node)},
    CFG_END,
};

#define RE(k) offsetof(struct resident_cfg, k)
static const struct cfg_key resident_keys[] = {
    {.key = "id",             .type = CFG_ID,      .offset = RE(id), .required = true},
    {.key = "name",           .type = CFG_NAME,    .offset = RE(name)},
    {.key = "room",           .type = CFG_ID,      .offset = RE(room)},
    {.key = "bed",            .type = CFG_ID,      .offset = RE(bed)},
    {.key = "devices",        .type = CFG_STRLIST, .offset = RE(devices)},
    {.key = "wandering_risk", .type = CFG_BOOL,    .offset = RE(wandering_risk), .def = "false"},
    {.key = "params",         .type = CFG_PARAMS,  .offset = RE(params)},
    CFG_END,
};
#undef RE

#define AL(k) offsetof(struct alarms_cfg, k)
static const struct cfg_key alarms_keys[] = {
    {.key = "state_file",   .type = CFG_PATH,     .offset = AL(state_file)},
    {.key = "flood_count",  .type = CFG_INT,      .offset = AL(flood_count), .def = "10", .min = 1, .max = 100000},
    {.key = "flood_window", .type = CFG_DURATION, .offset = AL(flood_window_ms), .def = "10m", .min = 1000, .max = 86400000},
    {.key = "history_max",  .type = CFG_INT,      .offset = AL(history_max), .def = "2000", .min = 10, .max = 1000000},
    {.key = "history",      .type = CFG_DURATION, .offset = AL(history_ms), .def = "24h", .min = 60000, .max = 2592000000.0},
    {.key = "shelve_max",   .type = CFG_DURATION, .offset = AL(shelve_max_ms), .def = "8h", .min = 60000, .max = 604800000},
    CFG_END,
};
#undef AL

static const struct cfg_enum roles[] = {{"staff", ROLE_STAFF}, {"admin", ROLE_ADMIN}, {NULL, 0}};

#define CU(k) offsetof(struct console_user, k)
static const struct cfg_key user_keys[] = {
    {.key = "name",          .type = CFG_NAME, .offset = CU(name), .required = true},
    {.key = "password_hash", .type = CFG_STR,  .offset = CU(password_hash), .required = true},
    {.key = "role",          .type = CFG_ENUM, .offset = CU(role), .def = "staff", .enums = roles},
    CFG_END,
};
#undef CU

#define CO(k) offsetof(struct console_cfg, k)
static const struct cfg_key console_keys[] = {
    {.key = "enabled",     .type = CFG_BOOL,     .offset = CO(enabled), .def = "false"},
    {.key = "bind",        .type = CFG_STR,      .offset = CO(bind), .def = "0.0.0.0"},
    {.key = "port",        .type = CFG_INT,      .offset = CO(port), .def = "8080", .min = 1, .max = 65535},
    {.key = "users",       .type = CFG_LIST,     .offset = CO(users), .sub = user_keys,
     .elem_size = sizeof(struct console_user), .node_offset = offsetof(struct console_user, node)},
    {.key = "session",     .type = CFG_DURATION, .offset = CO(session_ms), .def = "12h", .min = 60000, .max = 2592000000.0},
    {.key = "max_clients", .type = CFG_INT,      .offset = CO(max_clients), .def = "32", .min = 1, .max = 1000},
    {.key = "tls",         .type = CFG_MAP,      .offset = CO(tls), .sub = cfg_https_keys},
    {.key = "connections", .type = CFG_MAP,      .offset = CO(connections), .sub = cfg_http_limit_keys},
    CFG_END,
};
#undef CO

#define LM(k) offsetof(struct local_mqtt_cfg, k)
static const struct cfg_key local_mqtt_keys[] = {
    {.key = "broker",        .type = CFG_STR,  .offset = LM(broker), .def = ""},
    {.key = "client_id",     .type = CFG_STR,  .offset = LM(client_id)},
    {.key = "username",      .type = CFG_STR,  .offset = LM(username)},
    {.key = "password",      .type = CFG_STR,  .offset = LM(password)},
    {.key = "password_file", .type = CFG_PATH, .offset = LM(password_file)},
    {.key = "tls",           .type = CFG_MAP,  .offset = LM(tls), .sub = cfg_tls_keys},
    CFG_END,
};
#undef LM

#define AN(k) offsetof(struct annunciator_cfg, k)
static const struct cfg_key annunciator_keys[] = {
    {.key = "id",                   .type = CFG_ID,      .offset = AN(id), .required = true},
    {.key = "bus",                  .type = CFG_ID,      .offset = AN(bus), .required = true},
    {.key = "slave",                .type = CFG_INT,     .offset = AN(slave), .required = true, .min = 0, .max = 247},
    {.key = "coil",                 .type = CFG_INT,     .offset = AN(coil), .required = true, .min = 0, .max = 65535},
    {.key = "priorities",           .type = CFG_STRLIST, .offset = AN(priorities), .required = true},
    {.key = "include_acknowledged", .type = CFG_BOOL,    .offset = AN(include_acknowledged), .def = "false"},
    {.key = "escalation",           .type = CFG_INT,     .offset = AN(min_escalation), .def = "0", .min = 0, .max = 10},
    CFG_END,
};
#undef AN

#define BD(k) offsetof(struct bed_cfg, k)
static const struct cfg_key bed_keys[] = {
    {.key = "id",   .type = CFG_ID,   .offset = BD(id), .required = true},
    {.key = "name", .type = CFG_NAME, .offset = BD(name), .required = true},
    CFG_END,
};
#undef BD

#define RM(k) offsetof(struct room_cfg, k)
static const struct cfg_key room_keys[] = {
    {.key = "id",   .type = CFG_ID,   .offset = RM(id), .required = true},
    {.key = "name", .type = CFG_NAME, .offset = RM(name)},
    {.key = "beds", .type = CFG_LIST, .offset = RM(beds), .sub = bed_keys,
     .elem_size = sizeof(struct bed_cfg), .node_offset = offsetof(struct bed_cfg, node)},
    CFG_END,
};
#undef RM

#define S(k) offsetof(struct site_config, k)
static const struct cfg_key site_keys[] = {
    {.key = "site",      .type = CFG_ID,      .offset = S(site), .required = true},
    {.key = "gateway",   .type = CFG_ID,      .offset = S(gateway), .required = true},
    {.key = "site_name", .type = CFG_NAME,    .offset = S(site_name)},
    {.key = "locale",    .type = CFG_ENUM,    .offset = S(locale), .def = "en", .enums = locales},
    {.key = "rooms",     .type = CFG_LIST,    .offset = S(rooms), .sub = room_keys,
     .elem_size = sizeof(struct room_cfg), .node_offset = offsetof(struct room_cfg, node)},
    {.key = "log_level", .type = CFG_ENUM,    .offset = S(log_level), .def = "info", .enums = cfg_log_levels},
    {.key = "uplink",    .type = CFG_MAP,     .offset = S(uplink), .required = true, .sub = uplink_keys},
    {.key = "spool",     .type = CFG_MAP,     .offset = S(spool), .sub = spool_keys},
    {.key = "profiles",  .type = CFG_STRLIST, .offset = S(profile_paths)},
    {.key = "buses",     .type = CFG_LIST,    .offset = S(buses), .required = true, .sub = site_bus_keys,
     .elem_size = sizeof(struct bus_cfg), .node_offset = offsetof(struct bus_cfg, node),
     .variant_key = "type", .variants = driver_bus_variants},
    {.key = "devices",   .type = CFG_LIST,    .offset = S(devices), .required = true, .sub = device_keys,
     .elem_size = sizeof(struct device_cfg), .node_offset = offsetof(struct device_cfg, node)},
    {.key = "self_metrics_interval", .type = CFG_DURATION, .offset = S(self_metrics_interval_ms),
     .def = "10s", .min = 1000, .max = 3600000},
    {.key = "timezone",      .type = CFG_STR,     .offset = S(timezone), .def = ""},
    {.key = "rule_packs",    .type = CFG_STRLIST, .offset = S(rule_packs)},
    {.key = "rules",         .type = CFG_LIST,    .offset = S(rules), .sub = rule_keys,
     .elem_size = sizeof(struct rule_cfg), .node_offset = offsetof(struct rule_cfg, node)},
    {.key = "disable_rules", .type = CFG_STRLIST, .offset = S(disable_rules)},
    {.key = "residents",     .type = CFG_LIST,    .offset = S(residents), .sub = resident_keys,
     .elem_size = sizeof(struct resident_cfg), .node_offset = offsetof(struct resident_cfg, node)},
    {.key = "alarms",        .type = CFG_MAP,     .offset = S(alarms), .sub = alarms_keys},
    {.key = "console",       .type = CFG_MAP,     .offset = S(console), .sub = console_keys},
    {.key = "local_mqtt",    .type = CFG_MAP,     .offset = S(local_mqtt), .sub = local_mqtt_keys},
    {.key = "annunciators",  .type = CFG_LIST,    .offset = S(annunciators), .sub = annunciator_keys,
     .elem_size = sizeof(struct annunciator_cfg), .node_offset = offsetof(struct annunciator_cfg, node)},
    {.key = "notify",        .type = CFG_NODE,    .offset = S(notify_node)},
    CFG_END,
};
#undef S
/* clang-format on */

/* ---- loading ---------------------------------------------------------- */

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the profile files named by one entry of `profiles:`: a file, or every
 * *.yaml / *.yml in a directory (sorted, so load order is stable). Returns 0,
 * -errno, or 1 for a directory holding no profile file. */
static int list_profile_files(const char *entry, char ***files, size_t *n)
{
    struct stat st;
    if (stat(entry, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode)) {
        *files = ch_xrealloc(*files, (*n + 1) * sizeof **files);
        (*files)[(*n)++] = ch_xstrdup(entry);
        return 0;
    }
    DIR *d = opendir(entry);
    if (!d)
        return -errno;
    size_t first = *n;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' ||
            !(has_suffix(de->d_name, ".yaml") || has_suffix(de->d_name, ".yml")))
            continue;
        size_t len = strlen(entry) + strlen(de->d_name) + 2;
        char *p = ch_xmalloc(len);
        snprintf(p, len, "%s/%s", entry, de->d_name);
        *files = ch_xrealloc(*files, (*n + 1) * sizeof **files);
        (*files)[(*n)++] = p;
    }
    closedir(d);
    if (*n == first)
        return 1;
    qsort(*files + first, *n - first, sizeof **files, name_cmp);
    return 0;
}

const struct profile *site_profile(const struct site *s, const char *id)
{
    for (size_t i = 0; i < s->cfg.n_profiles; i++)
        if (strcmp(s->cfg.profiles[i].id, id) == 0)
            return &s->cfg.profiles[i];
    return NULL;
}

/* Whether register i of profile p reads what an earlier one does: the same
 * table (function code) and overlapping addresses, unless both are single
 * bits of one u16 register (different bits). Reports it; returns errors. */
static int check_overlap(const struct profile *p, size_t i)
{
    const struct reg_def *r = PROFILE_REG(p, i);
    int64_t end = r->address + reg_type_words(r->type);
    for (size_t j = 0; j < i; j++) {
        const struct reg_def *o = PROFILE_REG(p, j);
        int64_t oend = o->address + reg_type_words(o->type);
        if (o->fc != r->fc || r->address >= oend || o->address >= end)
            continue;
        if (r->bit >= 0 && o->bit >= 0 && r->address == o->address && r->bit != o->bit)
            continue;
        cfg_report(r->node, "address",
                   "key 'address': %s at %lld (fc %lld) overlaps '%s' (%s at %lld%s): two "
                   "metrics cannot read the same register, except as different bits of a u16",
                   cfg_enum_name(reg_types, r->type), (long long)r->address, (long long)r->fc,
                   o->metric, cfg_enum_name(reg_types, o->type), (long long)o->address,
                   o->bit >= 0 && r->bit >= 0 ? ", the same bit" : "");
        return 1;
    }
    return 0;
}

/* The key that addresses a device on its bus's type (drivers' tables):
 * required there, refused elsewhere. Returns the number of errors. */
static int check_address(const struct device_cfg *d)
{
    const struct driver_bus_type *bt = driver_bus_type(d->busp->type);
    enum drv_address want = bt ? bt->address : DRV_ADDR_SLAVE;
    const char *type = bt ? bt->name : "?";
    static const struct {
        enum drv_address addr;
        const char *key, *what;
    } keys[] = {
        {DRV_ADDR_SLAVE, "slave", "its unit id on the line"},
        {DRV_ADDR_MAC, "mac", "the wearable's BLE address"},
        {DRV_ADDR_TOPIC, "topic", "the MQTT topic the device publishes on"},
    };
    bool has[] = {d->slave >= 0, d->mac && *d->mac, d->topic && *d->topic};
    int errors = 0;
    for (size_t k = 0; k < CH_ARRAY_LEN(keys); k++) {
        if (keys[k].addr == want && !has[k])
            cfg_report(d->node, keys[k].key,
                       "missing required key '%s': a device on bus '%s' (type %s) is addressed "
                       "by it (%s)",
                       keys[k].key, d->bus, type, keys[k].what);
        else if (keys[k].addr != want && has[k] && keys[k].addr != DRV_ADDR_SLAVE)
            cfg_report(d->node, keys[k].key,
                       "key '%s': a device on bus '%s' (type %s) has no %s; it is %s", keys[k].key,
                       d->bus, type, keys[k].key,
                       want == DRV_ADDR_NONE ? "the only device on its line"
                                             : "addressed by another key");
        else
            continue;
        errors++;
    }
    return errors;
}

/* Checks one profile beyond what the key table can: types fit the function
 * code, metric names are unique, registers do not overlap. Returns the
 * number of errors. */
static int check_profile(struct profile *p)
{
    /* what its protocol's driver knows: registers or metrics, a wearable's
       advertisement layout, where a JSON field is */
    const struct driver_protocol *proto = driver_protocol(p->protocol);
    int errors = proto ? proto->check(p) : 0;
    for (size_t i = 0; i < p->metrics.n; i++)
        for (size_t j = 0; j < i; j++)
            if (!strcmp(PROFILE_METRIC(p, i)->metric, PROFILE_METRIC(p, j)->metric)) {
                cfg_report(PROFILE_METRIC(p, i)->node, "metric",
                           "key 'metric': '%s' appears twice in profile '%s'",
                           PROFILE_METRIC(p, i)->metric, p->id);
                errors++;
                break;
            }
    for (size_t i = 0; i < p->regs.n; i++) {
        struct reg_def *r = PROFILE_REG(p, i);
        bool bits = r->fc == 1 || r->fc == 2;
        if (bits != (r->type == REG_BOOL)) {
            cfg_report(r->node, "type",
                       "key 'type': %s with fc %lld (bool goes with fc 1 and 2, "
                       "register types with fc 3 and 4)",
                       cfg_enum_name(reg_types, r->type), (long long)r->fc);
            errors++;
        }
        if (r->bit >= 0 && r->type != REG_U16) {
            cfg_report(r->node, "bit", "key 'bit': only a u16 register can be split into bits");
            errors++;
        }
        if (r->address + reg_type_words(r->type) > 65536) {
            cfg_report(r->node, "address", "key 'address': %s at %lld runs past 65535",
                       cfg_enum_name(reg_types, r->type), (long long)r->address);
            errors++;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(PROFILE_REG(p, j)->metric, r->metric) == 0) {
                cfg_report(r->node, "metric", "key 'metric': '%s' appears twice in profile '%s'",
                           r->metric, p->id);
                errors++;
                break;
            }
        }
        errors += check_overlap(p, i);
    }
    return errors;
}

int profile_load(const char *path, struct profile *out, struct cfg_file **file_out)
{
    driver_types_init(); /* the protocols, from the drivers */
    struct cfg_file *pf = NULL;
    int rc = cfg_load(path, profile_keys, out, &pf);
    if (rc != 0) {
        cfg_free(profile_keys, out);
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->path = ch_xstrdup(path);
    out->node = cfg_file_root(pf);
    if (check_profile(out) != 0) {
        profile_free(out);
        cfg_file_close(pf);
        return CH_ECONFIG;
    }
    if (file_out)
        *file_out = pf;
    else {
        cfg_file_close(pf); /* the nodes go with the document */
        out->node = NULL;
        for (size_t i = 0; i < out->regs.n; i++)
            PROFILE_REG(out, i)->node = NULL;
        for (size_t i = 0; i < out->metrics.n; i++)
            PROFILE_METRIC(out, i)->node = NULL;
    }
    return 0;
}

void profile_free(struct profile *p)
{
    free(p->path);
    cfg_free(profile_keys, p);
    memset(p, 0, sizeof *p);
}

static int load_profiles(struct site *s, struct fy_node *root)
{
    struct site_config *c = &s->cfg;
    char **files = NULL;
    size_t nfiles = 0;
    int errors = 0;
    struct fy_node *plist = fy_node_mapping_lookup_by_string(root, "profiles", FY_NT);

    const char *dir = cfg_file_dir(s->file);
    if (!plist) {
        /* default: "profiles" beside the site file */
        free(c->profile_paths.items);
        c->profile_paths.items = ch_xcalloc(1, sizeof(char *));
        ((char **)c->profile_paths.items)[0] = ch_xstrdup("profiles");
        c->profile_paths.n = 1;
    }
    for (size_t i = 0; i < c->profile_paths.n; i++) {
        char **slot = &((char **)c->profile_paths.items)[i];
        char *entry = cfg_resolve_path(dir, *slot);
        free(*slot);
        *slot = entry;
        int rc = list_profile_files(entry, &files, &nfiles);
        if (rc == 1) {
            if (plist)
                cfg_report(plist, NULL, "key 'profiles': '%s' holds no *.yaml or *.yml file",
                           entry);
            else
                fprintf(stderr, "%s: no 'profiles' key and default '%s' holds no profile file\n",
                        c->path, entry);
            errors++;
        } else if (rc != 0) {
            if (plist)
                cfg_report(plist, NULL, "key 'profiles': cannot read '%s': %s", entry,
                           strerror(-rc));
            else
                fprintf(stderr, "%s: no 'profiles' key and cannot read default '%s': %s\n", c->path,
                        entry, strerror(-rc));
            errors++;
        }
    }

    c->profiles = ch_xcalloc(nfiles, sizeof *c->profiles);
    s->profile_files = ch_xcalloc(nfiles, sizeof *s->profile_files);
    for (size_t i = 0; i < nfiles; i++) {
        struct profile *p = &c->profiles[c->n_profiles];
        struct cfg_file *pf = NULL;
        if (profile_load(files[i], p, &pf) != 0) {
            errors++;
            continue;
        }
        s->profile_files[s->n_profile_files++] = pf;
        const struct profile *dup = site_profile(s, p->id); /* searches the earlier ones */
        c->n_profiles++;
        if (dup) {
            fprintf(stderr, "%s: profile '%s' is also defined in %s\n", p->path, p->id, dup->path);
            errors++;
        }
    }
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    return errors;
}

static int check_site(struct site *s)
{
    struct site_config *c = &s->cfg;
    int errors = 0;

    for (size_t i = 0; i < c->buses.n; i++) {
        struct bus_cfg *b = SITE_BUS(c, i);
        if (!b->id)
            continue; /* reported: its keys had errors */
        for (size_t j = 0; j < i; j++) {
            if (SITE_BUS(c, j)->id && strcmp(SITE_BUS(c, j)->id, b->id) == 0) {
                cfg_report(b->node, "id", "key 'id': duplicate bus id '%s'", b->id);
                errors++;
            }
        }
    }

    for (size_t i = 0; i < c->devices.n; i++) {
        struct device_cfg *d = SITE_DEV(c, i);
        if (!d->id || !d->bus || !d->profile)
            continue; /* reported: its keys had errors */
        for (size_t j = 0; j < i; j++) {
            if (SITE_DEV(c, j)->id && strcmp(SITE_DEV(c, j)->id, d->id) == 0) {
                cfg_report(d->node, "id", "key 'id': duplicate device id '%s'", d->id);
                errors++;
                break;
            }
        }
        for (size_t j = 0; j < c->buses.n; j++)
            if (SITE_BUS(c, j)->id && strcmp(SITE_BUS(c, j)->id, d->bus) == 0)
                d->busp = SITE_BUS(c, j);
        if (!d->busp) {
            const char *near = NULL;
            for (size_t j = 0; j < c->buses.n; j++)
                if (SITE_BUS(c, j)->id && cfg_edit_distance(SITE_BUS(c, j)->id, d->bus) <= 2)
                    near = SITE_BUS(c, j)->id;
            cfg_report(d->node, "bus", "key 'bus': no bus with id '%s'%s%s%s", d->bus,
                       near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
            errors++;
        }
        if (d->busp)
            errors += check_address(d);
        d->prof = site_profile(s, d->profile);
        if (!d->prof) {
            const char *near = NULL;
            size_t best = 3;
            for (size_t j = 0; j < c->n_profiles; j++) {
                size_t dist = cfg_edit_distance(c->profiles[j].id, d->profile);
                if (dist < best) {
                    best = dist;
                    near = c->profiles[j].id;
                }
            }
            cfg_report(d->node, "profile", "key 'profile': unknown profile '%s' (%s%s%s%zu loaded)",
                       d->profile, near ? "did you mean '" : "", near ? near : "",
                       near ? "'? " : "", c->n_profiles);
            errors++;
        }
        if (d->busp) {
            for (size_t j = 0; j < i; j++) {
                struct device_cfg *o = SITE_DEV(c, j);
                if (o->busp == d->busp && o->slave == d->slave && d->slave >= 0 && o->enabled &&
                    d->enabled) {
                    cfg_report(d->node, "slave",
                               "key 'slave': slave %lld on bus '%s' is already "
                               "device '%s'",
                               (long long)d->slave, d->bus, o->id);
                    errors++;
                    break;
                }
            }
        }
    }
    return errors;
}

static bool strlist_has(const struct cfg_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(((char **)l->items)[i], s) == 0)
            return true;
    return false;
}

static const struct device_cfg *site_device(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->devices.n; i++)
        if (strcmp(SITE_DEV(c, i)->id, id) == 0)
            return SITE_DEV(c, i);
    return NULL;
}

/* Adds r to the rules in force unless its id is taken. Returns errors. */
static int add_rule(struct site_config *c, struct rule_cfg *r, const char *source)
{
    r->source = source;
    for (size_t i = 0; i < c->n_all_rules; i++) {
        if (strcmp(c->all_rules[i]->id, r->id) == 0) {
            cfg_report(r->node, "id",
                       "key 'id': rule '%s' is also defined in %s (ids must be unique; "
                       "to replace a pack's rule, list it in disable_rules)",
                       r->id, c->all_rules[i]->source);
            return 1;
        }
    }
    c->all_rules = ch_xrealloc(c->all_rules, (c->n_all_rules + 1) * sizeof *c->all_rules);
    c->all_rules[c->n_all_rules++] = r;
    return 0;
}

/* Loads the rule packs and puts every rule in force in all_rules: the
 * packs' (less disable_rules), then the site's. Returns errors. */
static int load_rules(struct site *s, struct fy_node *root)
{
    struct site_config *c = &s->cfg;
    int errors = 0;
    const char *dir = cfg_file_dir(s->file);
    s->packs = ch_xcalloc(c->rule_packs.n + 1, sizeof *s->packs);
    s->pack_files = ch_xcalloc(c->rule_packs.n + 1, sizeof *s->pack_files);
    struct fy_node *plist = fy_node_mapping_lookup_by_string(root, "rule_packs", FY_NT);
    for (size_t i = 0; i < c->rule_packs.n; i++) {
        char **slot = &((char **)c->rule_packs.items)[i];
        char *path = cfg_resolve_path(dir, *slot);
        free(*slot);
        *slot = path;
        struct rule_pack *p = &s->packs[s->n_packs];
        struct cfg_file *pf = NULL;
        int rc = cfg_load(path, pack_keys, p, &pf);
        if (rc != 0) {
            cfg_free(pack_keys, p);
            memset(p, 0, sizeof *p);
            if (rc != CH_ECONFIG)
                cfg_report(plist, NULL, "key 'rule_packs': cannot read '%s': %s", path,
                           strerror(-rc));
            errors++;
            continue;
        }
        p->path = ch_xstrdup(path);
        s->pack_files[s->n_packs++] = pf;
    }
    for (size_t i = 0; i < c->disable_rules.n; i++) {
        const char *id = ((char **)c->disable_rules.items)[i];
        bool found = false;
        for (size_t k = 0; k < s->n_packs && !found; k++)
            for (size_t j = 0; j < s->packs[k].rules.n && !found; j++)
                found = !strcmp(((struct rule_cfg *)s->packs[k].rules.items)[j].id, id);
        if (!found && errors == 0) {
            cfg_report(fy_node_mapping_lookup_by_string(root, "disable_rules", FY_NT), NULL,
                       "key 'disable_rules': no rule pack has a rule '%s'", id);
            errors++;
        }
    }
    for (size_t k = 0; k < s->n_packs; k++) {
        for (size_t j = 0; j < s->packs[k].rules.n; j++) {
            struct rule_cfg *r = &((struct rule_cfg *)s->packs[k].rules.items)[j];
            if (!strlist_has(&c->disable_rules, r->id))
                errors += add_rule(c, r, s->packs[k].path);
        }
    }
    for (size_t j = 0; j < c->rules.n; j++)
        errors += add_rule(c, &((struct rule_cfg *)c->rules.items)[j], c->path);
    return errors;
}

static int check_residents(struct site_config *c)
{
    int errors = 0;
    for (size_t i = 0; i < c->residents.n; i++) {
        struct resident_cfg *r = SITE_RESIDENT(c, i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(SITE_RESIDENT(c, j)->id, r->id) == 0) {
                cfg_report(r->node, "id", "key 'id': duplicate resident '%s'", r->id);
                errors++;
                break;
            }
        }
        for (size_t k = 0; k < r->devices.n; k++) {
            const char *d = ((char **)r->devices.items)[k];
            if (!site_device(c, d)) {
                cfg_report(r->node, "devices", "key 'devices': no device with id '%s'", d);
                errors++;
                continue;
            }
            for (size_t j = 0; j < i; j++) {
                if (strlist_has(&SITE_RESIDENT(c, j)->devices, d)) {
                    cfg_report(r->node, "devices",
                               "key 'devices': device '%s' is already assigned to resident '%s'", d,
                               SITE_RESIDENT(c, j)->id);
                    errors++;
                }
            }
        }
    }
    return errors;
}

/* Rooms and beds are named once each; console user names fit "console:"
 * in an alert's by and hold no ':' (it separates the source). Every rule's
 * message is chosen in the site's locale. Returns errors. */
static int check_names(struct site_config *c)
{
    int errors = 0;
    for (size_t i = 0; i < c->rooms.n; i++) {
        const struct room_cfg *r = &((struct room_cfg *)c->rooms.items)[i];
        for (size_t j = 0; j < i; j++)
            if (!strcmp(((struct room_cfg *)c->rooms.items)[j].id, r->id)) {
                cfg_report(r->node, "id", "key 'id': room '%s' is named twice", r->id);
                errors++;
                break;
            }
        for (size_t b = 0; b < r->beds.n; b++)
            for (size_t k = 0; k < b; k++)
                if (!strcmp(((struct bed_cfg *)r->beds.items)[b].id,
                            ((struct bed_cfg *)r->beds.items)[k].id)) {
                    cfg_report(((struct bed_cfg *)r->beds.items)[b].node, "id",
                               "key 'id': bed '%s' is named twice in room '%s'",
                               ((struct bed_cfg *)r->beds.items)[b].id, r->id);
                    errors++;
                    break;
                }
    }
    for (size_t i = 0; i < c->console.users.n; i++) {
        const struct console_user *u = &((struct console_user *)c->console.users.items)[i];
        if (strlen(u->name) > CONSOLE_USER_MAX || strchr(u->name, ':')) {
            cfg_report(u->node, "name",
                       "key 'name': '%s' is longer than %d bytes or has a ':' (a user name is "
                       "written \"console:<name>\" in every alarm the user handles)",
                       u->name, CONSOLE_USER_MAX);
            errors++;
        }
    }
    const char *loc = site_locale_name(c->locale);
    for (size_t i = 0; i < c->n_all_rules; i++) {
        struct rule_cfg *r = (struct rule_cfg *)c->all_rules[i];
        r->message = cfg_text_get(&r->message_text, loc);
    }
    return errors;
}

const char *site_room_name(const struct site_config *c, const char *id)
{
    if (!id || !*id)
        return NULL;
    for (size_t i = 0; i < c->buses.n; i++) {
        const struct cfg_list *z = &SITE_BUS(c, i)->location.zones;
        for (size_t k = 0; k < z->n; k++) {
            const struct ble_zone_cfg *zc = &((struct ble_zone_cfg *)z->items)[k];
            if (zc->name && !strcmp(zc->id, id))
                return zc->name;
        }
    }
    for (size_t i = 0; i < c->rooms.n; i++) {
        const struct room_cfg *r = &((struct room_cfg *)c->rooms.items)[i];
        if (r->name && !strcmp(r->id, id))
            return r->name;
    }
    return NULL;
}

const char *site_bed_name(const struct site_config *c, const char *room, const char *bed)
{
    if (!bed || !*bed)
        return NULL;
    const char *any = NULL;
    for (size_t i = 0; i < c->rooms.n; i++) {
        const struct room_cfg *r = &((struct room_cfg *)c->rooms.items)[i];
        for (size_t b = 0; b < r->beds.n; b++) {
            const struct bed_cfg *bc = &((struct bed_cfg *)r->beds.items)[b];
            if (strcmp(bc->id, bed))
                continue;
            if (room && !strcmp(r->id, room))
                return bc->name;
            if (!any)
                any = bc->name;
        }
    }
    return any;
}

static int check_alarm_outputs(struct site_config *c)
{
    int errors = 0;
    for (size_t i = 0; i < c->annunciators.n; i++) {
        struct annunciator_cfg *a = SITE_ANNUNCIATOR(c, i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(SITE_ANNUNCIATOR(c, j)->id, a->id) == 0) {
                cfg_report(a->node, "id", "key 'id': duplicate annunciator '%s'", a->id);
                errors++;
                break;
            }
        }
        for (size_t j = 0; j < c->buses.n; j++)
            if (strcmp(SITE_BUS(c, j)->id, a->bus) == 0)
                a->busp = SITE_BUS(c, j);
        if (!a->busp) {
            cfg_report(a->node, "bus", "key 'bus': no bus with id '%s'", a->bus);
            errors++;
        }
        a->prio_mask = 0;
        for (size_t k = 0; k < a->priorities.n; k++) {
            const char *p = ((char **)a->priorities.items)[k];
            int v = -1;
            for (const struct cfg_enum *e = priorities; e->name; e++)
                if (!strcmp(e->name, p))
                    v = e->value;
            if (v < 0) {
                cfg_report(a->node, "priorities",
                           "key 'priorities': '%s' is not one of: low medium high", p);
                errors++;
            } else {
                a->prio_mask |= 1u << v;
            }
        }
        if (a->priorities.n == 0) {
            cfg_report(a->node, "priorities", "key 'priorities': name at least one priority");
            errors++;
        }
    }
    if (c->console.enabled && c->console.users.n == 0) {
        cfg_report(c->console.node, "users",
                   "key 'users': an enabled console needs at least one user "
                   "(no anonymous acknowledgement)");
        errors++;
    }
    for (size_t i = 0; i < c->console.users.n; i++) {
        struct console_user *u = &((struct console_user *)c->console.users.items)[i];
        if (u->password_hash[0] != '$') {
            cfg_report(u->node, "password_hash",
                       "key 'password_hash': not a crypt(3) hash (make one with "
                       "care-edge --hash-password)");
            errors++;
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(((struct console_user *)c->console.users.items)[j].name, u->name)) {
                cfg_report(u->node, "name", "key 'name': duplicate user '%s'", u->name);
                errors++;
                break;
            }
        }
    }
    if (!c->alarms.state_file || !*c->alarms.state_file) {
        free(c->alarms.state_file);
        c->alarms.state_file = cfg_resolve_path(c->spool.dir, "alarms.state");
    }
    return errors;
}

static bool lm_set(const char *s)
{
    return s && *s;
}

static bool lm_is_tls(const char *uri)
{
    return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0;
}

/* Reports key of map if file is set and cannot be read. Returns errors. */
static int lm_check_file(struct fy_node *map, const char *key, const char *file)
{
    if (!lm_set(file))
        return 0;
    FILE *f = fopen(file, "r");
    if (!f) {
        cfg_report(map, key, "key '%s': cannot read %s: %s", key, file, strerror(errno));
        return 1;
    }
    fclose(f);
    return 0;
}

/* The local broker's credentials and TLS: consistent, files readable; the
 * password of password_file read into m->password. Returns errors. */
static int check_local_mqtt(struct local_mqtt_cfg *m, struct fy_node *root)
{
    struct fy_node *node = fy_node_mapping_lookup_by_string(root, "local_mqtt", FY_NT);
    struct fy_node *tls = node ? fy_node_mapping_lookup_by_string(node, "tls", FY_NT) : NULL;
    int errors = 0;
    if (!lm_set(m->broker))
        return 0;
    if (!lm_is_tls(m->broker) && tls) {
        cfg_report(node, "tls", "key 'tls': the broker '%s' is not ssl:// or mqtts://", m->broker);
        errors++;
    }
    if (lm_set(m->tls.cert_file) != lm_set(m->tls.key_file)) {
        cfg_report(tls, lm_set(m->tls.cert_file) ? "cert_file" : "key_file",
                   "keys 'cert_file' and 'key_file' go together");
        errors++;
    }
    errors += lm_check_file(tls, "ca_file", m->tls.ca_file);
    errors += lm_check_file(tls, "cert_file", m->tls.cert_file);
    errors += lm_check_file(tls, "key_file", m->tls.key_file);
    if (lm_set(m->password) && lm_set(m->password_file)) {
        cfg_report(node, "password_file", "keys 'password' and 'password_file': one or the other");
        errors++;
    }
    if ((lm_set(m->password) || lm_set(m->password_file)) && !lm_set(m->username)) {
        cfg_report(node, lm_set(m->password) ? "password" : "password_file",
                   "key '%s' needs 'username'", lm_set(m->password) ? "password" : "password_file");
        errors++;
    }
    if (errors || !lm_set(m->password_file))
        return errors;
    FILE *f = fopen(m->password_file, "r");
    char line[1024] = "";
    if (!f || !fgets(line, sizeof line, f)) {
        cfg_report(node, "password_file", "key 'password_file': cannot read a password from %s%s%s",
                   m->password_file, f ? "" : ": ", f ? "" : strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0]) {
        cfg_report(node, "password_file", "key 'password_file': %s starts with an empty line",
                   m->password_file);
        return 1;
    }
    free(m->password);
    m->password = ch_xstrdup(line);
    return 0;
}

int site_load(const char *path, struct site *out)
{
    memset(out, 0, sizeof *out);
    driver_types_init(); /* the bus types and their keys, from the drivers */
    int errors = 0; /* of the keys: the buses and devices are checked on (every error at once) */
    int rc = cfg_load_all(path, site_keys, &out->cfg, &out->file, &errors);
    out->cfg.path = ch_xstrdup(path);
    if (rc != 0) {
        site_free(out);
        return rc;
    }
    struct fy_node *root = cfg_file_root(out->file);
    errors += load_profiles(out, root);
    errors += check_site(out);
    if (errors) {
        fprintf(stderr, "%s: configuration has errors\n", path);
        site_free(out);
        return CH_ECONFIG;
    }
    out->cfg.console.node = fy_node_mapping_lookup_by_string(root, "console", FY_NT);
    errors += load_rules(out, root);
    errors += check_residents(&out->cfg);
    errors += check_alarm_outputs(&out->cfg);
    errors += check_names(&out->cfg);
    if (out->cfg.notify_node && notify_cfg_parse(out->cfg.notify_node, &out->cfg.notify) != 0)
        errors++;
    if (out->cfg.notify_node)
        out->cfg.notify_src = fy_emit_node_to_string(out->cfg.notify_node, FYECF_MODE_FLOW_ONELINE);
    errors += check_local_mqtt(&out->cfg.local_mqtt, root);
    if (errors == 0)
        errors += rules_check(&out->cfg);
    if (errors) {
        fprintf(stderr, "%s: configuration has errors\n", path);
        site_free(out);
        return CH_ECONFIG;
    }
    return 0;
}

void site_free(struct site *s)
{
    for (size_t i = 0; i < s->cfg.n_profiles; i++)
        profile_free(&s->cfg.profiles[i]);
    free(s->cfg.profiles);
    for (size_t i = 0; i < s->n_profile_files; i++)
        cfg_file_close(s->profile_files[i]);
    free(s->profile_files);
    for (size_t i = 0; i < s->n_packs; i++) {
        free(s->packs[i].path);
        cfg_free(pack_keys, &s->packs[i]);
        cfg_file_close(s->pack_files[i]);
    }
    free(s->packs);
    free(s->pack_files);
    free(s->cfg.all_rules);
    free(s->cfg.path);
    notify_cfg_free(s->cfg.notify);
    free(s->cfg.notify_src);
    cfg_free(site_keys, &s->cfg);
    cfg_file_close(s->file);
    memset(s, 0, sizeof *s);
}
