#include "hubcfg.h"
#include "notify.h"
#include "cfg.h"
#include "err.h"
#include "log.h"
#include "tokens.h"
#include "util.h"

#include <libfyaml.h>
#include <stdarg.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)

/* One line per key: the tables read as the tables they are. */
/* clang-format off */
#define M(k) offsetof(struct hubcfg_mqtt, k)
static const struct cfg_key mqtt_keys[] = {
    {.key = "broker",        .type = CFG_STR,      .offset = M(broker), .required = true},
    {.key = "client_id",     .type = CFG_ID,       .offset = M(client_id), .required = true},
    {.key = "username",      .type = CFG_STR,      .offset = M(username)},
    {.key = "password",      .type = CFG_STR,      .offset = M(password)},
    {.key = "tls",           .type = CFG_MAP,      .offset = M(tls), .sub = cfg_tls_keys},
    {.key = "topic",         .type = CFG_STR,      .offset = M(topic), .def = "carehub/v1/+/+/#"},
    {.key = "shared_group",  .type = CFG_ID,       .offset = M(shared_group)},
    {.key = "keepalive",     .type = CFG_DURATION, .offset = M(keepalive_ms), .def = "30s", .min = 1000, .max = 65535000},
    {.key = "clean_session", .type = CFG_BOOL,     .offset = M(clean_session), .def = "false"},
    CFG_END,
};
#undef M

#define DAY_MS (86400000.0)
#define R(k) offsetof(struct hubcfg_retention, k)
static const struct cfg_key retention_keys[] = {
    {.key = "raw",      .type = CFG_DURATION, .offset = R(raw_ms), .def = "0", .min = 0, .max = 3660 * DAY_MS},
    {.key = "hourly",   .type = CFG_DURATION, .offset = R(hourly_ms), .def = "0", .min = 0, .max = 36600 * DAY_MS},
    {.key = "interval", .type = CFG_DURATION, .offset = R(interval_ms), .def = "10m", .min = 1000, .max = DAY_MS},
    CFG_END,
};
#undef R

#define I(k) offsetof(struct hubcfg_influx, k)
static const struct cfg_key influx_keys[] = {
    {.key = "url",              .type = CFG_STR,      .offset = I(url), .required = true},
    {.key = "version",          .type = CFG_INT,      .offset = I(version), .def = "1", .min = 1, .max = 2},
    {.key = "database",         .type = CFG_ID,       .offset = I(database)},
    {.key = "username",         .type = CFG_STR,      .offset = I(username)},
    {.key = "password",         .type = CFG_STR,      .offset = I(password)},
    {.key = "org",              .type = CFG_STR,      .offset = I(org)},
    {.key = "bucket",           .type = CFG_STR,      .offset = I(bucket)},
    {.key = "token",            .type = CFG_STR,      .offset = I(token)},
    {.key = "create_database",  .type = CFG_BOOL,     .offset = I(create_database), .def = "true"},
    {.key = "gzip",             .type = CFG_BOOL,     .offset = I(gzip), .def = "true"},
    {.key = "batch_size",       .type = CFG_INT,      .offset = I(batch_size), .def = "5000", .min = 1, .max = 1000000},
    {.key = "flush_interval",   .type = CFG_DURATION, .offset = I(flush_interval_ms), .def = "1s", .min = 10, .max = 3600000},
    {.key = "timeout",          .type = CFG_DURATION, .offset = I(timeout_ms), .def = "10s", .min = 100, .max = 600000},
    {.key = "max_backoff",      .type = CFG_DURATION, .offset = I(max_backoff_ms), .def = "30s", .min = 100, .max = 3600000},
    {.key = "shutdown_timeout", .type = CFG_DURATION, .offset = I(shutdown_timeout_ms), .def = "10s", .min = 0, .max = 600000},
    {.key = "dead_letter",      .type = CFG_PATH,     .offset = I(dead_letter)}, /* default: see hubcfg_load */
    {.key = "retention",        .type = CFG_MAP,      .offset = I(retention), .sub = retention_keys},
    CFG_END,
};
#undef I

#define Q(k) offsetof(struct hubcfg_spool, k)
static const struct cfg_key spool_keys[] = {
    {.key = "dir",             .type = CFG_PATH,     .offset = Q(dir), .def = "/var/lib/carehub/hub-spool"},
    {.key = "max_bytes",       .type = CFG_INT,      .offset = Q(max_bytes), .def = "1073741824", .min = 1 * MIB, .max = 1048576 * MIB},
    {.key = "commit_interval", .type = CFG_DURATION, .offset = Q(commit_interval_ms), .def = "1s", .min = 10, .max = 60000},
    CFG_END,
};
#undef Q

#define L(k) offsetof(struct hubcfg_limit, k)
static const struct cfg_key limit_keys[] = {
    {.key = "metric",      .type = CFG_ID,    .offset = L(metric), .required = true},
    {.key = "measurement", .type = CFG_ID,    .offset = L(measurement), .def = "environment"},
    {.key = "min",         .type = CFG_FLOAT, .offset = L(min), .def = "-1e308"},
    {.key = "max",         .type = CFG_FLOAT, .offset = L(max), .def = "1e308"},
    CFG_END,
};
#undef L

static const struct cfg_enum grants[] = {{"none", 0}, {"health", GRANT_HEALTH}, {"location", GRANT_LOCATION}, {NULL, 0}};

#define V(k) offsetof(struct hubcfg_view, k)
static const struct cfg_key view_keys[] = {
    {.key = "measurement", .type = CFG_ID,      .offset = V(measurement), .required = true},
    {.key = "fields",      .type = CFG_STRLIST, .offset = V(fields)},
    {.key = "grant",       .type = CFG_ENUM,    .offset = V(grant), .def = "none", .enums = grants},
    CFG_END,
};
#undef V

#define A(k) offsetof(struct hubcfg_api, k)
const struct cfg_enum console_locales[] = {{"en", 0}, {"zh-CN", 1}, {NULL, 0}};

static const struct cfg_key api_keys[] = {
    {.key = "bind",               .type = CFG_STR,      .offset = A(bind), .def = "127.0.0.1"},
    {.key = "port",               .type = CFG_INT,      .offset = A(port), .def = "8090", .min = 0, .max = 65535},
    {.key = "tokens_file",        .type = CFG_PATH,     .offset = A(tokens_file), .required = true},
    {.key = "users_file",         .type = CFG_PATH,     .offset = A(users_file)},
    {.key = "locale",             .type = CFG_ENUM,     .offset = A(locale), .def = "en", .enums = console_locales},
    {.key = "session_idle",       .type = CFG_DURATION, .offset = A(session_idle_ms), .def = "1h", .min = 1000, .max = 30 * 86400000.0},
    {.key = "session_max_age",    .type = CFG_DURATION, .offset = A(session_max_age_ms), .def = "12h", .min = 1000, .max = 30 * 86400000.0},
    {.key = "max_sessions",       .type = CFG_INT,      .offset = A(max_sessions), .def = "4096", .min = 1, .max = 1000000},
    {.key = "www_dir",            .type = CFG_PATH,     .offset = A(www_dir), .def = CAREHUB_WWW_DIR},
    {.key = "audit_log",          .type = CFG_PATH,     .offset = A(audit_log)},
    {.key = "pseudonym_key_file", .type = CFG_PATH,     .offset = A(pseudonym_key_file)},
    {.key = "rate_limit",         .type = CFG_INT,      .offset = A(rate_limit), .def = "20", .min = 1, .max = 100000},
    {.key = "max_clients",        .type = CFG_INT,      .offset = A(max_clients), .def = "256", .min = 1, .max = 10000},
    {.key = "max_streams_per_token", .type = CFG_INT,   .offset = A(max_streams_per_token), .def = "0", .min = 0, .max = 10000},
    {.key = "max_streams_per_site", .type = CFG_INT,    .offset = A(max_streams_per_site), .def = "0", .min = 0, .max = 10000},
    {.key = "max_exports_per_token", .type = CFG_INT,   .offset = A(max_exports_per_token), .def = "4", .min = 1, .max = 1000},
    {.key = "address_rate_limit", .type = CFG_INT,      .offset = A(address_rate_limit), .def = "10", .min = 1, .max = 100000},
    {.key = "audit_max_bytes",    .type = CFG_INT,      .offset = A(audit_max_bytes), .def = "67108864", .min = 4096, .max = 1048576 * MIB},
    {.key = "audit_keep",         .type = CFG_INT,      .offset = A(audit_keep), .def = "5", .min = 0, .max = 99},
    {.key = "audit_refusal_interval", .type = CFG_DURATION, .offset = A(audit_refusal_interval_ms), .def = "1m", .min = 1000, .max = 3600000},
    {.key = "tls",                .type = CFG_MAP,      .offset = A(tls), .sub = cfg_https_keys},
    {.key = "connections",        .type = CFG_MAP,      .offset = A(connections), .sub = cfg_http_limit_keys},
    {.key = "device_timeout",     .type = CFG_DURATION, .offset = A(device_timeout_ms), .def = "5m", .min = 10000, .max = 86400000},
    {.key = "query_timeout",      .type = CFG_DURATION, .offset = A(query_timeout_ms), .def = "30s", .min = 100, .max = 600000},
    {.key = "compliance",         .type = CFG_LIST,     .offset = A(compliance), .sub = limit_keys,
     .elem_size = sizeof(struct hubcfg_limit), .node_offset = offsetof(struct hubcfg_limit, node)},
    {.key = "regulator_view",     .type = CFG_LIST,     .offset = A(regulator_view), .sub = view_keys,
     .elem_size = sizeof(struct hubcfg_view), .node_offset = offsetof(struct hubcfg_view, node)},
    CFG_END,
};
#undef A

#define G(k) offsetof(struct hubcfg_ingest, k)
static const struct cfg_key ingest_keys[] = {
    {.key = "rate",                 .type = CFG_INT,      .offset = G(rate), .def = "5000", .min = 1, .max = 10000000},
    {.key = "burst",                .type = CFG_INT,      .offset = G(burst), .def = "10000", .min = 1, .max = 100000000},
    {.key = "max_devices",          .type = CFG_INT,      .offset = G(max_devices), .def = "2000", .min = 1, .max = 10000},
    {.key = "devices_before_birth", .type = CFG_INT,      .offset = G(devices_before_birth), .def = "32", .min = 0, .max = 10000},
    {.key = "inventory_grace",      .type = CFG_DURATION, .offset = G(inventory_grace_ms), .def = "24h", .min = 0, .max = 30 * 86400000.0},
    {.key = "registry",             .type = CFG_PATH,     .offset = G(registry)},
    {.key = "queue_bytes",          .type = CFG_INT,      .offset = G(queue_bytes), .def = "4194304", .min = 1 * MIB, .max = 1024 * MIB},
    {.key = "queue_max_bytes",      .type = CFG_INT,      .offset = G(queue_max_bytes), .def = "33554432", .min = 1 * MIB, .max = 16384 * MIB},
    {.key = "workers",              .type = CFG_INT,      .offset = G(workers), .def = "1", .min = 1, .max = 16},
    CFG_END,
};
#undef G

static const struct cfg_key hub_keys[] = {
    {.key = "mqtt",   .type = CFG_MAP, .offset = offsetof(struct hubcfg, mqtt), .required = true, .sub = mqtt_keys},
    {.key = "api",    .type = CFG_MAP, .offset = offsetof(struct hubcfg, api), .sub = api_keys},
    {.key = "ingest", .type = CFG_MAP, .offset = offsetof(struct hubcfg, ingest), .sub = ingest_keys},
    {.key = "influx", .type = CFG_MAP, .offset = offsetof(struct hubcfg, influx), .required = true, .sub = influx_keys},
    {.key = "spool",  .type = CFG_MAP, .offset = offsetof(struct hubcfg, spool), .sub = spool_keys},
    {.key = "self_metrics_interval", .type = CFG_DURATION, .offset = offsetof(struct hubcfg, self_metrics_interval_ms),
     .def = "10s", .min = 1000, .max = 3600000},
    {.key = "rollup_after", .type = CFG_DURATION, .offset = offsetof(struct hubcfg, rollup_after_ms), .def = "15m",
     .min = 60000, .max = 30 * 86400000.0},
    {.key = "gap_grace", .type = CFG_DURATION, .offset = offsetof(struct hubcfg, gap_grace_ms), .def = "10m",
     .min = 1000, .max = 86400000},
    {.key = "ack_interval", .type = CFG_DURATION, .offset = offsetof(struct hubcfg, ack_interval_ms), .def = "2s",
     .min = 100, .max = 60000},
    {.key = "log_level", .type = CFG_ENUM, .offset = offsetof(struct hubcfg, log_level), .def = "info",
     .enums = cfg_log_levels},
    {.key = "notify", .type = CFG_NODE, .offset = offsetof(struct hubcfg, notify_node)},
    {.key = "notify_max_age", .type = CFG_DURATION, .offset = offsetof(struct hubcfg, notify_max_age_ms),
     .def = "15m", .min = 10000, .max = 86400000},
    {.key = "notify_timezone", .type = CFG_STR, .offset = offsetof(struct hubcfg, notify_timezone), .def = ""},
    CFG_END,
};
/* clang-format on */

/* The rules that span keys, checked after the tables, reported at the line
 * of the key in the document cfg_load() parsed. */
struct check {
    const char *path;
    struct cfg_file *file;
    int errors;
};

static void problem(struct check *c, const char *node_path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(struct check *c, const char *node_path, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->errors++;
    struct fy_node *root = cfg_file_root(c->file);
    struct fy_node *map = root ? fy_node_by_path(root, node_path, FY_NT, FYNWF_DONT_FOLLOW) : NULL;
    if (map)
        cfg_report(map, key, "%s", msg);
    else
        fprintf(stderr, "%s: %s\n", c->path, msg);
}

static bool set(const char *s)
{
    return s && s[0];
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void check_file(struct check *c, const char *file, const char *key)
{
    if (set(file) && access(file, R_OK) != 0)
        problem(c, "/mqtt/tls", key, "key '%s': cannot read %s", key, file);
}

static void check_mqtt(struct check *c, const struct hubcfg_mqtt *m)
{
    bool tls = has_prefix(m->broker, "ssl://");
    if (!tls && !has_prefix(m->broker, "tcp://"))
        problem(c, "/mqtt", "broker", "key 'broker': '%s' must start with tcp:// or ssl://",
                m->broker);
    if (!tls && (set(m->tls.ca_file) || set(m->tls.cert_file) || set(m->tls.key_file)))
        problem(c, "/mqtt", "tls",
                "key 'tls': certificate files are set but the broker is not "
                "ssl://");
    if (set(m->tls.key_file) != set(m->tls.cert_file))
        problem(c, "/mqtt/tls", set(m->tls.key_file) ? "key_file" : "cert_file",
                "keys 'cert_file' and 'key_file' go together");
    check_file(c, m->tls.ca_file, "ca_file");
    check_file(c, m->tls.cert_file, "cert_file");
    check_file(c, m->tls.key_file, "key_file");
    if (set(m->password) && !set(m->username))
        problem(c, "/mqtt", "password", "key 'password' needs 'username'");
    if (!set(m->topic))
        problem(c, "/mqtt", "topic", "key 'topic' must not be empty");
}

static void check_influx(struct check *c, const struct hubcfg_influx *i)
{
    if (!has_prefix(i->url, "http://") && !has_prefix(i->url, "https://"))
        problem(c, "/influx", "url", "key 'url': '%s' must start with http:// or https://", i->url);
    static const char *const v1_only[] = {"database", "username", "password"};
    static const char *const v2_only[] = {"org", "bucket", "token"};
    const char *v1[] = {i->database, i->username, i->password};
    const char *v2[] = {i->org, i->bucket, i->token};
    for (int k = 0; k < 3; k++) {
        if (i->version == 1 && set(v2[k]))
            problem(c, "/influx", v2_only[k], "key '%s' is for version 2", v2_only[k]);
        if (i->version == 2 && set(v1[k]))
            problem(c, "/influx", v1_only[k], "key '%s' is for version 1", v1_only[k]);
        if (i->version == 2 && !set(v2[k]))
            problem(c, "/influx", v2_only[k], "key '%s' is required with version 2", v2_only[k]);
    }
    if (i->version == 1 && !set(i->database))
        problem(c, "/influx", "database", "key 'database' is required with version 1");
    if (i->version == 1 && set(i->password) && !set(i->username))
        problem(c, "/influx", "password", "key 'password' needs 'username'");
    const struct hubcfg_retention *r = &i->retention;
    if (r->raw_ms && i->version != 1)
        problem(c, "/influx", "retention",
                "key 'retention': retention policies are InfluxDB 1.x's; with version 2 the "
                "bucket's own retention applies (leave 'retention' out)");
    /* InfluxDB's shortest policy is an hour; the hourly history is made
     * while the readings are there, so they are kept a day at least */
    if (r->raw_ms && r->raw_ms < DAY_MS)
        problem(c, "/influx/retention", "raw",
                "key 'raw': keep readings a day at least (1d), or 0 for as long as the "
                "database's default policy keeps them");
    if (r->hourly_ms && r->hourly_ms < r->raw_ms)
        problem(c, "/influx/retention", "hourly",
                "key 'hourly': the hourly history is kept at least as long as the readings "
                "(raw), or 0 for ever");
    if (r->hourly_ms && !r->raw_ms)
        problem(c, "/influx/retention", "hourly", "key 'hourly' needs 'raw'");
}

/* api.regulator_view: telemetry only (the alarm measurement follows the
 * fields its alarms name; carehub_* are the hub's own), field names, each
 * field of a measurement (or the whole of it) in one entry only, so that
 * which grant it needs is never a matter of order. */
static void check_view(struct check *c, const struct cfg_list *view)
{
    const struct hubcfg_view *v = view->items;
    for (size_t i = 0; i < view->n; i++) {
        const struct hubcfg_view *e = &v[i];
        if (!strcmp(e->measurement, "alarm") || has_prefix(e->measurement, "carehub_")) {
            cfg_report(e->node, "measurement",
                       "key 'measurement': '%s' is not telemetry (an alarm record shows what the "
                       "entries of its metric allow)",
                       e->measurement);
            c->errors++;
        }
        const char *const *f = e->fields.items;
        for (size_t j = 0; j < e->fields.n; j++) {
            if (!ch_valid_id(f[j]) || !strcmp(f[j], "time")) {
                cfg_report(e->node, "fields",
                           "key 'fields': '%s' is not a field name (leave 'fields' out for every "
                           "field)",
                           f[j]);
                c->errors++;
            }
        }
        for (size_t k = 0; k < i; k++) {
            const struct hubcfg_view *o = &v[k];
            if (strcmp(o->measurement, e->measurement))
                continue;
            if (!e->fields.n && !o->fields.n) {
                cfg_report(e->node, "measurement",
                           "key 'measurement': every field of '%s' is in an earlier entry already",
                           e->measurement);
                c->errors++;
            }
            const char *const *of = o->fields.items;
            for (size_t j = 0; j < e->fields.n; j++)
                for (size_t m = 0; m < o->fields.n; m++)
                    if (!strcmp(f[j], of[m])) {
                        cfg_report(e->node, "fields",
                                   "key 'fields': '%s' of '%s' is in an earlier entry already",
                                   f[j], e->measurement);
                        c->errors++;
                    }
        }
    }
}

/* A default file beside the spool: name in the directory that holds the
 * spool directory (spool.dir is absolute by now). */
static char *beside_spool(const char *spool_dir, const char *name)
{
    size_t n = strlen(spool_dir);
    while (n > 1 && spool_dir[n - 1] == '/') /* "/a/b/" -> "/a/b" */
        n--;
    while (n > 0 && spool_dir[n - 1] != '/') /* -> "/a/" */
        n--;
    while (n > 1 && spool_dir[n - 1] == '/') /* -> "/a" ("/" stays) */
        n--;
    size_t len = n + strlen(name) + 2;
    char *p = ch_xmalloc(len);
    if (n <= 1)
        snprintf(p, len, "%s%s", n ? "/" : "", name);
    else
        snprintf(p, len, "%.*s/%s", (int)n, spool_dir, name);
    return p;
}

static void default_beside_spool(char **field, const char *spool_dir, const char *name)
{
    if (!set(*field)) {
        free(*field);
        *field = beside_spool(spool_dir, name);
    }
}

int hubcfg_load(const char *path, struct hubcfg *out)
{
    memset(out, 0, sizeof *out);
    struct check c = {.path = path};
    int rc = cfg_load(path, hub_keys, out, &c.file);
    if (rc)
        return rc;
    check_mqtt(&c, &out->mqtt);
    check_influx(&c, &out->influx);
    check_view(&c, &out->api.regulator_view);
    default_beside_spool(&out->influx.dead_letter, out->spool.dir, "dead-letter.lp");
    if (set(out->api.tokens_file)) {
        default_beside_spool(&out->api.audit_log, out->spool.dir, "audit.jsonl");
        default_beside_spool(&out->api.pseudonym_key_file, out->spool.dir, "pseudonym.key");
        for (size_t i = 0; i < out->api.compliance.n; i++) {
            const struct hubcfg_limit *l = &((struct hubcfg_limit *)out->api.compliance.items)[i];
            if (l->min > l->max)
                problem(&c, "/api", "compliance", "key 'compliance': %s: min is above max",
                        l->metric);
        }
    }
    if (out->notify_node && notify_cfg_parse(out->notify_node, &out->notify) != 0)
        c.errors++;
    if (set(out->notify_timezone)) {
        char zone[PATH_MAX];
        snprintf(zone, sizeof zone, "/usr/share/zoneinfo/%s", out->notify_timezone);
        if (strstr(out->notify_timezone, "..") || access(zone, R_OK) != 0)
            problem(&c, "/", "notify_timezone",
                    "key 'notify_timezone': '%s' is not a time zone of /usr/share/zoneinfo "
                    "(e.g. Asia/Shanghai)",
                    out->notify_timezone);
    }
    out->notify_node = NULL; /* its document goes now */
    cfg_file_close(c.file);
    if (c.errors) {
        fprintf(stderr, "%s: %d error%s\n", path, c.errors, c.errors == 1 ? "" : "s");
        hubcfg_free(out);
        return CH_ECONFIG;
    }
    return 0;
}

void hubcfg_free(struct hubcfg *c)
{
    notify_cfg_free(c->notify);
    c->notify = NULL;
    cfg_free(hub_keys, c);
}
