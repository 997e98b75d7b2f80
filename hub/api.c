#include "api.h"
#include "codec.h"
#include "config.h"
#include "err.h"
#include "httpd.h"
#include "influx.h"
#include "influxq.h"
#include "lineproto.h"
#include "log.h"
#include "presence.h"
#include "subscriber.h"
#include "tokens.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD              "api"
#define BODY_MAX         4096 /* request bodies beyond this: 413 */
#define CONN_HEADROOM    64   /* connections beyond the event streams */
#define CONN_TIMEOUT_S   60
#define KEEPALIVE_MS     15000
#define RANGE_MAX_MS     (400LL * 86400000) /* longest from..to */
#define DEFAULT_RANGE_MS 86400000LL
#define ACTIVE_LOOKBACK  "90d" /* an alarm silent for longer is not "active" */
#define ALARMS_LIMIT_MAX 10000
#define EXPORT_WINDOW_MS 3600000LL /* an export reads InfluxDB an hour at a time */
#define SERIES_POINTS    2000
#define ALARM_ROWS_MAX   100000 /* alarm transitions one query may return */
#define PATH_MAX_LEN     200

/* Series a regulator reads only with a grant (config api.sensitive). */
struct sensitive_def {
    const char *measurement;
    const char *const *metrics; /* none: every metric of it */
    size_t n_metrics;
    unsigned grant;
};

static const char *const location_metrics[] = {"zone", "zone_exit", "rssi", "in_range"};

/* When the configuration names none. */
static const struct sensitive_def default_sensitive[] = {
    {"wearable", location_metrics, CH_ARRAY_LEN(location_metrics), GRANT_LOCATION},
    {"wearable", NULL, 0, GRANT_HEALTH},
    {"bed", NULL, 0, GRANT_HEALTH},
};

/* An environment limit of the summary (config api.compliance). */
struct limit_def {
    const char *measurement, *metric;
    double min, max;
};

/* GB/T 18883-2022 (indoor air quality): CO2 <= 0.10 % (1000 ppm), PM2.5 <= 50
 * ug/m3 (24 h); temperature and humidity span its summer and winter bands. */
static const struct limit_def default_limits[] = {
    {"environment", "co2", -1e308, 1000},
    {"environment", "pm25", -1e308, 50},
    {"environment", "temperature", 16, 28},
    {"environment", "humidity", 30, 80},
};

struct api {
    const struct hubcfg *cfg;
    const struct sensitive_def *sens; /* the configuration's, or the defaults */
    size_t n_sens;
    const struct limit_def *lims;
    size_t n_lims;
    struct presence *view;
    struct influx *writer;
    struct sub *mqtt;
    struct MHD_Daemon *d;
    uint16_t port;
    struct influxq q;
    struct ch_sse sse;
    unsigned char pkey[32]; /* regulators' pseudonym key */

    pthread_rwlock_t tokens_lock;
    struct tokens *tokens;

    pthread_mutex_t audit_mu;
    FILE *audit;
    int64_t audit_last_ms; /* audit points get distinct times per hub */
};

/* Who asks: a copy of the token's name, role and scope (the tokens may be
 * reloaded while a stream runs). */
struct who {
    char name[CH_ID_MAX];
    int role;
    bool all;
    char district[CH_ID_MAX];
    size_t n_sites;
    char (*sites)[CH_ID_MAX];
    unsigned grants;
};

/* Per request. */
struct req {
    struct ch_http_body body;
    int64_t start_mono;
    /* for the audit entry */
    bool authed;
    struct who who;
    char method[8];
    char path[PATH_MAX_LEN + 1];
    char query[256];
    char sites[256]; /* sites the answer concerned, comma separated */
    char addr[64];
    unsigned status;
    uint64_t rows;
};

static bool is_regulator(const struct who *w)
{
    return w->role == ROLE_REGULATOR;
}

static bool in_scope(const struct who *w, const char *site)
{
    if (w->all)
        return true;
    if (w->district[0])
        return strncmp(site, w->district, strlen(w->district)) == 0;
    for (size_t i = 0; i < w->n_sites; i++)
        if (!strcmp(w->sites[i], site))
            return true;
    return false;
}

static void note_site(struct req *r, const char *site)
{
    size_t n = strlen(r->sites);
    if (strstr(r->sites, site)) /* good enough for a log: ids rarely nest */
        return;
    snprintf(r->sites + n, sizeof r->sites - n, "%s%s", n ? "," : "", site);
}

/* ---- responses ------------------------------------------------------------- */

static enum MHD_Result reply(struct req *r, struct MHD_Connection *c, unsigned status, char *body,
                             const char *hdr, const char *val)
{
    r->status = status;
    return ch_http_send_body(c, status, body, hdr, val);
}

static enum MHD_Result reply_json(struct req *r, struct MHD_Connection *c, unsigned status,
                                  json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return reply(r, c, status, s, NULL, NULL);
}

static const char *error_code(unsigned status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 409:
        return "conflict";
    case 413:
        return "too_large";
    case 415:
        return "unsupported_media_type";
    case 429:
        return "rate_limited";
    case 503:
        return "unavailable";
    default:
        return status >= 500 ? "internal" : "error";
    }
}

static enum MHD_Result fail_hdr(struct req *r, struct MHD_Connection *c, unsigned status,
                                const char *hdr, const char *val, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result fail_hdr(struct req *r, struct MHD_Connection *c, unsigned status,
                                const char *hdr, const char *val, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s,s:s}", "error", error_code(status), "message", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return reply(r, c, status, s, hdr, val);
}

#define fail(r, c, status, ...) fail_hdr(r, c, status, NULL, NULL, __VA_ARGS__)

/* An InfluxDB failure as the client sees it. */
static enum MHD_Result fail_query(struct req *r, struct MHD_Connection *c, int rc, const char *err)
{
    LOGW(MOD, r->path, "query failed: %s", err);
    if (rc == CH_ERETRY)
        return fail(r, c, MHD_HTTP_SERVICE_UNAVAILABLE, "the database cannot be reached; retry");
    return fail(r, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "the database refused the query");
}

/* ---- parameters ------------------------------------------------------------ */

struct params {
    const char *const *allowed;
    const char *bad; /* first unknown parameter */
};

static enum MHD_Result check_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    (void)value;
    struct params *p = cls;
    for (const char *const *a = p->allowed; *a; a++)
        if (!strcmp(*a, key))
            return MHD_YES;
    p->bad = key;
    return MHD_NO;
}

/* NULL if every query parameter is one of allowed (NULL-terminated), else
 * the first that is not. */
static const char *unknown_param(struct MHD_Connection *c, const char *const *allowed)
{
    struct params p = {.allowed = allowed};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_param, &p);
    return p.bad;
}

static const char *arg(struct MHD_Connection *c, const char *key)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? v : NULL;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int api_parse_time(const char *s, int64_t *ms)
{
    size_t n = strlen(s);
    if (n > 0 && n <= 15 && digits(s, (int)n)) {
        long long v;
        if (ch_parse_int(s, &v) || v < 0)
            return -1;
        *ms = v;
        return 0;
    }
    if (n < 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2))
        return -1;
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return -1;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400000;
    if (n == 10) {
        *ms = t;
        return 0;
    }
    const char *p = s + 10;
    if ((*p != 'T' && *p != 't' && *p != ' ') || strlen(p) < 9 || !digits(p + 1, 2) ||
        p[3] != ':' || !digits(p + 4, 2) || p[6] != ':' || !digits(p + 7, 2))
        return -1;
    int hh = num(p + 1, 2), mi = num(p + 4, 2), ss = num(p + 7, 2);
    if (hh > 23 || mi > 59 || ss > 60)
        return -1;
    t += ((int64_t)hh * 3600 + mi * 60 + (ss == 60 ? 59 : ss)) * 1000;
    p += 9;
    if (*p == '.') {
        p++;
        int k = 0, frac = 0;
        while (*p >= '0' && *p <= '9') {
            if (k < 3)
                frac = frac * 10 + (*p - '0');
            k++;
            p++;
        }
        if (k == 0 || k > 9)
            return -1;
        for (int i = k; i < 3; i++)
            frac *= 10;
        t += frac;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        *ms = t;
        return 0;
    }
    if ((*p == '+' || *p == '-') && strlen(p) == 6 && digits(p + 1, 2) && p[3] == ':' &&
        digits(p + 4, 2)) {
        int oh = num(p + 1, 2), om = num(p + 4, 2);
        if (oh > 23 || om > 59)
            return -1;
        int64_t off = ((int64_t)oh * 60 + om) * 60000;
        *ms = *p == '+' ? t - off : t + off;
        return 0;
    }
    return -1;
}

/* from/to of the request: defaults to the last day; checked. Returns true,
 * or false after answering 400. */
static bool time_range(struct req *r, struct MHD_Connection *c, int64_t *from, int64_t *to,
                       enum MHD_Result *ret)
{
    const char *f = arg(c, "from"), *t = arg(c, "to");
    *to = ch_now_ms();
    if (t && api_parse_time(t, to)) {
        *ret = fail(r, c, 400, "parameter 'to': not a date (RFC 3339 or epoch milliseconds)");
        return false;
    }
    *from = *to - DEFAULT_RANGE_MS;
    if (f && api_parse_time(f, from)) {
        *ret = fail(r, c, 400, "parameter 'from': not a date (RFC 3339 or epoch milliseconds)");
        return false;
    }
    if (*from >= *to) {
        *ret = fail(r, c, 400, "parameters 'from' and 'to': from must be before to");
        return false;
    }
    if (*to - *from > RANGE_MAX_MS) {
        *ret = fail(r, c, 400, "parameters 'from' and 'to': at most 400 days");
        return false;
    }
    return true;
}

/* The site parameter: absent (NULL, when optional), or a valid id in scope.
 * Returns true, or false after answering. */
static bool site_param(struct req *r, struct MHD_Connection *c, bool required, const char **site,
                       enum MHD_Result *ret)
{
    *site = arg(c, "site");
    if (!*site) {
        if (required)
            *ret = fail(r, c, 400, "parameter 'site' is required");
        return !required;
    }
    if (!ch_valid_id(*site)) {
        *ret = fail(r, c, 400, "parameter 'site': not a site id");
        return false;
    }
    if (!in_scope(&r->who, *site)) {
        *ret = fail(r, c, 403, "that site is outside this token's scope");
        return false;
    }
    note_site(r, *site);
    return true;
}

/* WHERE condition on sites: the one asked for, or the token's scope. */
static void where_sites(struct qb *q, const struct who *w, const char *site)
{
    if (site) {
        qb_add(q, "\"site\" = ");
        qb_str(q, site);
    } else if (w->all) {
        qb_add(q, "\"site\" =~ /./");
    } else if (w->district[0]) {
        qb_add(q, "\"site\" =~ ");
        qb_regex_prefix(q, w->district);
    } else {
        qb_add(q, "(");
        for (size_t i = 0; i < w->n_sites; i++) {
            qb_add(q, "%s\"site\" = ", i ? " OR " : "");
            qb_str(q, w->sites[i]);
        }
        if (w->n_sites == 0)
            qb_add(q, "false");
        qb_add(q, ")");
    }
}

static void where_time(struct qb *q, int64_t from, int64_t to)
{
    qb_add(q, " AND time >= ");
    qb_time(q, from);
    qb_add(q, " AND time < ");
    qb_time(q, to);
}

/* ---- privacy ----------------------------------------------------------------- */

/* The regulator's pseudonym of a resident: a keyed hash of site and the
 * site's own pseudonym, so that regulators' records cannot be joined with
 * the site's, and one resident stays one pseudonym across requests. */
static void regulator_pseudonym(const struct api *a, const char *site, const char *resident,
                                char out[16])
{
    char in[2 * CH_ID_MAX + 2];
    int n = snprintf(in, sizeof in, "%s/%s", site, resident);
    unsigned char md[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), a->pkey, sizeof a->pkey, (const unsigned char *)in, (size_t)n, md, &len);
    snprintf(out, 16, "P-%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4]);
}

static bool id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* A message for a regulator: rules may write the site's own pseudonym of the
 * resident into it ("{resident}"); every whole occurrence becomes the
 * regulator's pseudonym. Cut at a character boundary if it grows too long. */
static void regulator_message(const char *msg, const char *resident, const char *pseud,
                              char out[CH_TEXT_MAX])
{
    size_t n = strlen(resident), k = strlen(pseud), o = 0;
    const char *start = msg;
    while (*msg) {
        if (n && !strncmp(msg, resident, n) && !id_char(msg[n]) &&
            (msg == start || !id_char(msg[-1]))) {
            if (o + k >= CH_TEXT_MAX)
                break;
            memcpy(out + o, pseud, k);
            o += k;
            msg += n;
            continue;
        }
        size_t c = 1; /* one UTF-8 character */
        while (msg[c] && ((unsigned char)msg[c] & 0xC0) == 0x80)
            c++;
        if (o + c >= CH_TEXT_MAX)
            break;
        memcpy(out + o, msg, c);
        o += c;
        msg += c;
    }
    out[o] = '\0';
}

/* What of a transition's people a reader sees: the site's pseudonym and
 * staff names, or for a regulator the re-keyed pseudonym (in the message
 * too) and "staff". The pointers are into t or into out. */
struct shown {
    const char *resident, *message, *by; /* by: NULL when nobody acted */
    char pseud[16];
    char msg[CH_TEXT_MAX];
};

static void privacy(const struct api *a, const struct ch_alert *t, bool regulator,
                    struct shown *out)
{
    out->resident = t->resident;
    out->message = t->message;
    out->by = t->by[0] ? (regulator ? "staff" : t->by) : NULL;
    if (regulator && t->resident[0]) {
        regulator_pseudonym(a, t->site, t->resident, out->pseud);
        regulator_message(t->message, t->resident, out->pseud, out->msg);
        out->resident = out->pseud;
        out->message = out->msg;
    }
}

/* The gateways' own metrics (edge_device, edge_gateway) and the hub's
 * (carehub_*): their readings are not a device's, and an offline device
 * still has its edge_device row every self_metrics_interval. */
static bool self_metrics_series(json_t *series)
{
    const char *m = json_string_value(json_object_get(series, "name"));
    return m && (!strncmp(m, "edge_", 5) || !strncmp(m, "carehub_", 8));
}

/* The grant a regulator needs for metric of measurement (metric NULL: any
 * metric of it: every grant that applies); 0 if none. The first rule that
 * names the metric decides. */
static unsigned needed_grant(const struct api *a, const char *measurement, const char *metric)
{
    unsigned need = 0;
    for (size_t i = 0; i < a->n_sens; i++) {
        const struct sensitive_def *s = &a->sens[i];
        if (strcmp(s->measurement, measurement))
            continue;
        bool match = s->n_metrics == 0 || !metric;
        for (size_t j = 0; j < s->n_metrics && !match; j++)
            match = !strcmp(s->metrics[j], metric);
        if (match) {
            need |= s->grant;
            if (metric)
                return need;
        }
    }
    return need;
}

static bool may_read(const struct api *a, const struct who *w, const char *measurement,
                     const char *metric)
{
    if (!is_regulator(w))
        return true;
    unsigned need = needed_grant(a, measurement, metric);
    return (need & w->grants) == need;
}

/* ---- alarms ------------------------------------------------------------------ */

#define N_STATES 6 /* enum ch_alarm_state */

static int event_parse(const char *name)
{
    for (int e = 0; e <= CH_AE_FLOOD_END; e++)
        if (!strcmp(ch_alarm_event_name(e), name))
            return e;
    return 0;
}

static json_t *ms_or_null(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

static json_t *secs_or_null(int64_t a, int64_t b)
{
    return a && b && b >= a ? json_real((double)(b - a) / 1000.0) : json_null();
}

/* The API's alarm object for one transition (the latest of an occurrence),
 * with the regulator's privacy applied. */
static json_t *alarm_object(const struct api *a, const struct ch_alert *t, bool regulator)
{
    struct shown sh;
    privacy(a, t, regulator, &sh);
    const char *resident = sh.resident, *message = sh.message, *by = sh.by;
    json_t *o = json_object();
    json_object_set_new(o, "site", json_string(t->site));
    json_object_set_new(o, "gateway", json_string(t->gateway));
    json_object_set_new(o, "alarm_id", json_string(t->alarm_id));
    json_object_set_new(o, "rule", json_string(t->rule));
    json_object_set_new(o, "device", json_string(t->device));
    json_object_set_new(o, "room", json_string(t->room));
    json_object_set_new(o, "bed", json_string(t->bed));
    json_object_set_new(o, "resident", json_string(resident));
    json_object_set_new(o, "priority", json_string(ch_priority_name(t->priority)));
    json_object_set_new(o, "state", json_string(ch_alarm_state_name(t->state)));
    json_object_set_new(o, "event", json_string(ch_alarm_event_name(t->event)));
    json_object_set_new(o, "message", json_string(message));
    json_object_set_new(o, "metric", json_string(t->metric));
    json_object_set_new(o, "value", t->has_value ? json_real(t->value) : json_null());
    json_object_set_new(o, "escalation", json_integer(t->escalation));
    json_object_set_new(o, "latched", json_boolean(t->latched));
    json_object_set_new(o, "raised_ms", ms_or_null(t->raised_ms));
    json_object_set_new(o, "acked_ms", ms_or_null(t->acked_ms));
    json_object_set_new(o, "cleared_ms", ms_or_null(t->cleared_ms));
    json_object_set_new(o, "updated_ms", json_integer(t->ts_ms));
    json_object_set_new(o, "ack_s", secs_or_null(t->raised_ms, t->acked_ms));
    json_object_set_new(o, "clear_s", secs_or_null(t->raised_ms, t->cleared_ms));
    json_object_set_new(o, "acked_by", by && t->acked_ms ? json_string(by) : json_null());
    json_object_set_new(o, "shelved_until_ms", ms_or_null(t->shelved_until_ms));
    json_object_set_new(o, "group", json_string(t->group));
    return o;
}

static const char *str_at(json_t *row, int i)
{
    json_t *v = i >= 0 ? json_array_get(row, (size_t)i) : NULL;
    return json_is_string(v) ? json_string_value(v) : "";
}

static int64_t int_at(json_t *row, int i)
{
    json_t *v = i >= 0 ? json_array_get(row, (size_t)i) : NULL;
    return json_is_number(v) ? (int64_t)json_number_value(v) : 0;
}

/* A row of the alarm measurement (columns of series s) back into a
 * transition. tags: the series' group-by tags (site, gateway, alarm_id). */
static void row_to_alert(json_t *s, json_t *row, struct ch_alert *t)
{
    memset(t, 0, sizeof *t);
    json_t *tags = json_object_get(s, "tags");
#define TXT(field, name)                                                                           \
    do {                                                                                           \
        json_t *tv = json_object_get(tags, name);                                                  \
        ch_strlcpy(t->field,                                                                       \
                   json_is_string(tv) ? json_string_value(tv) : str_at(row, influxq_col(s, name)), \
                   sizeof t->field);                                                               \
    } while (0)
    TXT(site, "site");
    TXT(gateway, "gateway");
    TXT(alarm_id, "alarm_id");
    TXT(rule, "rule");
    TXT(device, "device");
    TXT(room, "room");
    TXT(bed, "bed");
    TXT(resident, "resident");
    TXT(metric, "metric");
    TXT(message, "message");
    TXT(by, "by");
    TXT(group, "group");
#undef TXT
    char tmp[32];
    ch_strlcpy(tmp, str_at(row, influxq_col(s, "priority")), sizeof tmp);
    t->priority = !strcmp(tmp, "high")     ? CH_PRIO_HIGH
                  : !strcmp(tmp, "medium") ? CH_PRIO_MEDIUM
                                           : CH_PRIO_LOW;
    ch_strlcpy(tmp, str_at(row, influxq_col(s, "state")), sizeof tmp);
    t->state = CH_AS_NORMAL;
    for (int i = 0; i < N_STATES; i++)
        if (!strcmp(tmp, ch_alarm_state_name(i)))
            t->state = i;
    t->event = event_parse(str_at(row, influxq_col(s, "event")));
    t->ts_ms = int_at(row, influxq_col(s, "time"));
    t->raised_ms = int_at(row, influxq_col(s, "raised_ms"));
    t->acked_ms = int_at(row, influxq_col(s, "acked_ms"));
    t->cleared_ms = int_at(row, influxq_col(s, "cleared_ms"));
    t->shelved_until_ms = int_at(row, influxq_col(s, "shelved_until_ms"));
    t->escalation = (int)int_at(row, influxq_col(s, "escalation"));
    json_t *lv = json_array_get(row, (size_t)influxq_col(s, "latched"));
    t->latched = json_is_true(lv);
    json_t *vv =
        influxq_col(s, "value") >= 0 ? json_array_get(row, (size_t)influxq_col(s, "value")) : NULL;
    t->has_value = json_is_number(vv);
    t->value = t->has_value ? json_number_value(vv) : 0;
}

/* An occurrence (site, gateway, alarm_id, raised_ms) is represented by its
 * latest transition. */
static int occ_key_cmp(const struct ch_alert *a, const struct ch_alert *b)
{
    int c = strcmp(a->site, b->site);
    if (!c)
        c = strcmp(a->gateway, b->gateway);
    if (!c)
        c = strcmp(a->alarm_id, b->alarm_id);
    if (!c)
        c = a->raised_ms < b->raised_ms ? -1 : a->raised_ms > b->raised_ms;
    return c;
}

static int occ_sort(const void *pa, const void *pb)
{
    const struct ch_alert *a = pa, *b = pb;
    int c = occ_key_cmp(a, b);
    if (c)
        return c;
    return a->ts_ms < b->ts_ms ? -1 : a->ts_ms > b->ts_ms;
}

static int occ_newest_first(const void *pa, const void *pb)
{
    const struct ch_alert *a = pa, *b = pb;
    if (a->raised_ms != b->raised_ms)
        return a->raised_ms > b->raised_ms ? -1 : 1;
    return strcmp(a->alarm_id, b->alarm_id);
}

/* Reads the occurrences raised in [from, to) at the sites (site, or the
 * scope); *out (caller frees), count in *n. Returns 0 or the query's error. */
static int read_occurrences(struct api *a, const struct who *w, const char *site, int64_t from,
                            int64_t to, struct ch_alert **out, size_t *n, char *err, size_t errn)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"alarm\" WHERE ");
    where_sites(&q, w, site);
    qb_add(&q, " AND \"raised_ms\" >= %" PRId64 " AND \"raised_ms\" < %" PRId64, from, to);
    qb_add(&q, " AND time >= ");
    qb_time(&q, from);
    qb_add(&q, " LIMIT %d", ALARM_ROWS_MAX);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    *out = NULL;
    *n = 0;
    if (rc)
        return rc;
    size_t cap = 0, cnt = 0;
    struct ch_alert *v = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            if (cnt == cap) {
                cap = cap ? 2 * cap : 64;
                v = ch_xrealloc(v, cap * sizeof *v);
            }
            row_to_alert(s, row, &v[cnt]);
            cnt++;
        }
    }
    json_decref(res);
    if (cnt)
        qsort(v, cnt, sizeof *v, occ_sort);
    /* keep the last transition of each occurrence */
    size_t k = 0;
    for (size_t j = 0; j < cnt; j++) {
        if (j + 1 < cnt && occ_key_cmp(&v[j], &v[j + 1]) == 0)
            continue;
        v[k++] = v[j];
    }
    *out = v;
    *n = k;
    return 0;
}

static bool state_matches(const char *want, int state)
{
    if (!want)
        return true;
    if (!strcmp(want, "active"))
        return state != CH_AS_NORMAL;
    return !strcmp(want, ch_alarm_state_name(state));
}

static enum MHD_Result h_alarms(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", "priority", "state", "limit", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_param(r, c, false, &site, &ret) || !time_range(r, c, &from, &to, &ret))
        return ret;
    const char *prio = arg(c, "priority"), *state = arg(c, "state");
    if (prio && strcmp(prio, "low") && strcmp(prio, "medium") && strcmp(prio, "high"))
        return fail(r, c, 400, "parameter 'priority': low, medium or high");
    bool state_ok = !state || !strcmp(state, "active");
    for (int i = 0; i < N_STATES && !state_ok; i++)
        state_ok = !strcmp(state, ch_alarm_state_name(i));
    if (!state_ok)
        return fail(r, c, 400,
                    "parameter 'state': active, unack, acked, rtn_unack, normal, shelved or "
                    "out_of_service");
    long long limit = 1000;
    const char *ls = arg(c, "limit");
    if (ls && (ch_parse_int(ls, &limit) || limit < 1 || limit > ALARMS_LIMIT_MAX))
        return fail(r, c, 400, "parameter 'limit': a whole number from 1 to %d", ALARMS_LIMIT_MAX);
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_occurrences(a, &r->who, site, from, to, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    if (n)
        qsort(v, n, sizeof *v, occ_newest_first);
    json_t *arr = json_array();
    for (size_t i = 0; i < n && json_array_size(arr) < (size_t)limit; i++) {
        const struct ch_alert *t = &v[i];
        if (prio && strcmp(prio, ch_priority_name(t->priority)))
            continue;
        if (!state_matches(state, t->state))
            continue;
        note_site(r, t->site);
        json_array_append_new(arr, alarm_object(a, t, is_regulator(&r->who)));
    }
    free(v);
    r->rows = json_array_size(arr);
    return reply_json(r, c, 200, json_pack("{s:o}", "alarms", arr));
}

/* The last transition of every alarm heard of in ACTIVE_LOOKBACK whose state
 * is not normal. */
static int read_active(struct api *a, const struct who *w, const char *site, struct ch_alert **out,
                       size_t *n, char *err, size_t errn)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"alarm\" WHERE ");
    where_sites(&q, w, site);
    qb_add(&q,
           " AND time > now() - %s GROUP BY \"site\", \"gateway\", \"alarm_id\" ORDER BY time "
           "DESC LIMIT 1",
           ACTIVE_LOOKBACK);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    *out = NULL;
    *n = 0;
    if (rc)
        return rc;
    json_t *series = influxq_series(res, 0);
    struct ch_alert *v = ch_xcalloc(json_array_size(series) + 1, sizeof *v);
    size_t k = 0, i;
    json_t *s;
    json_array_foreach(series, i, s)
    {
        json_t *row = json_array_get(json_object_get(s, "values"), 0);
        if (!row)
            continue;
        row_to_alert(s, row, &v[k]);
        if (v[k].state != CH_AS_NORMAL)
            k++;
    }
    json_decref(res);
    if (k)
        qsort(v, k, sizeof *v, occ_newest_first);
    *out = v;
    *n = k;
    return 0;
}

static enum MHD_Result h_active(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    if (!site_param(r, c, false, &site, &ret))
        return ret;
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_active(a, &r->who, site, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        note_site(r, v[i].site);
        json_array_append_new(arr, alarm_object(a, &v[i], is_regulator(&r->who)));
    }
    free(v);
    r->rows = json_array_size(arr);
    return reply_json(r, c, 200, json_pack("{s:o}", "alarms", arr));
}

/* ---- sites ---------------------------------------------------------------------- */

static int gw_cmp(const void *pa, const void *pb)
{
    const struct presence_gw *a = pa, *b = pb;
    int c = strcmp(a->site, b->site);
    return c ? c : strcmp(a->gateway, b->gateway);
}

/* Devices with a reading in the last device_timeout, per site/gateway: an
 * object "site/gateway" -> count (NULL when InfluxDB cannot say). */
static json_t *devices_online(struct api *a, const struct who *w, const char *site)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT count(\"seq\") FROM /.*/ WHERE ");
    where_sites(&q, w, site);
    qb_add(&q, " AND time > now() - %" PRId64 "ms GROUP BY \"site\", \"gateway\", \"device\"",
           a->cfg->api.device_timeout_ms);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&a->q, &q, &res, err, sizeof err);
    if (rc) {
        LOGW(MOD, "sites", "devices online unknown: %s", err);
        return NULL;
    }
    json_t *seen = json_object(), *counts = json_object();
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        if (self_metrics_series(s))
            continue;
        json_t *tags = json_object_get(s, "tags");
        const char *st = json_string_value(json_object_get(tags, "site"));
        const char *gw = json_string_value(json_object_get(tags, "gateway"));
        const char *dev = json_string_value(json_object_get(tags, "device"));
        if (!st || !gw || !dev)
            continue;
        char key[3 * CH_ID_MAX + 3];
        snprintf(key, sizeof key, "%s/%s/%s", st, gw, dev);
        if (json_object_get(seen, key))
            continue; /* the same device in another measurement */
        json_object_set_new(seen, key, json_true());
        snprintf(key, sizeof key, "%s/%s", st, gw);
        json_int_t n = json_integer_value(json_object_get(counts, key));
        json_object_set_new(counts, key, json_integer(n + 1));
    }
    json_decref(seen);
    json_decref(res);
    return counts;
}

static json_t *site_object_new(const char *site)
{
    return json_pack("{s:s,s:b,s:n,s:s,s:i,s:i,s:{s:i,s:i,s:i},s:[]}", "site", site, "online", 0,
                     "last_seen_ms", "version", "", "devices_total", 0, "devices_online", 0,
                     "active_alarms", "high", 0, "medium", 0, "low", 0, "gateways");
}

/* Site objects (see API.md) for the sites in scope (or just site), sorted.
 * Without with_influx (on the MQTT thread, which must not wait for a
 * database), the figures that come from InfluxDB are left out. */
static json_t *sites_json(struct api *a, const struct who *w, const char *site, bool with_influx)
{
    struct presence_gw *g;
    size_t n = presence_list(a->view, &g);
    if (n)
        qsort(g, n, sizeof *g, gw_cmp);
    json_t *online = with_influx ? devices_online(a, w, site) : NULL;
    json_t *sites = json_array();
    json_t *cur = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!in_scope(w, g[i].site) || (site && strcmp(site, g[i].site)))
            continue;
        if (!cur || strcmp(json_string_value(json_object_get(cur, "site")), g[i].site)) {
            cur = site_object_new(g[i].site);
            json_array_append_new(sites, cur);
        }
        char key[2 * CH_ID_MAX + 2];
        snprintf(key, sizeof key, "%s/%s", g[i].site, g[i].gateway);
        json_t *dn = online ? json_object_get(online, key) : NULL;
        json_int_t don = dn ? json_integer_value(dn) : 0;
        json_t *gw = json_pack("{s:s,s:b,s:I,s:s,s:I,s:o}", "gateway", g[i].gateway, "online",
                               g[i].online, "last_seen_ms", (json_int_t)g[i].last_seen, "version",
                               g[i].version, "devices_total", (json_int_t)g[i].n_devices,
                               "devices_online", online ? json_integer(don) : json_null());
        json_array_append_new(json_object_get(cur, "gateways"), gw);
        if (g[i].online)
            json_object_set_new(cur, "online", json_true());
        json_t *ls = json_object_get(cur, "last_seen_ms");
        if (!json_is_integer(ls) || json_integer_value(ls) < g[i].last_seen)
            json_object_set_new(cur, "last_seen_ms", json_integer(g[i].last_seen));
        if (g[i].version[0])
            json_object_set_new(cur, "version", json_string(g[i].version));
        json_object_set_new(cur, "devices_total",
                            json_integer(json_integer_value(json_object_get(cur, "devices_total")) +
                                         (json_int_t)g[i].n_devices));
        if (online)
            json_object_set_new(
                cur, "devices_online",
                json_integer(json_integer_value(json_object_get(cur, "devices_online")) + don));
        else
            json_object_set_new(cur, "devices_online", json_null());
    }
    free(g);
    json_decref(online);
    if (!with_influx) {
        size_t j;
        json_t *so;
        json_array_foreach(sites, j, so)
        {
            json_object_del(so, "devices_online");
            json_object_del(so, "active_alarms");
            size_t k;
            json_t *gw;
            json_array_foreach(json_object_get(so, "gateways"), k, gw)
                json_object_del(gw, "devices_online");
        }
    }
    if (with_influx && json_array_size(sites)) {
        struct ch_alert *v;
        size_t na;
        char err[512];
        if (read_active(a, w, site, &v, &na, err, sizeof err) == 0) {
            for (size_t i = 0; i < na; i++) {
                size_t j;
                json_t *so;
                json_array_foreach(sites, j, so)
                {
                    if (strcmp(json_string_value(json_object_get(so, "site")), v[i].site))
                        continue;
                    json_t *aa = json_object_get(so, "active_alarms");
                    const char *p = ch_priority_name(v[i].priority);
                    json_object_set_new(
                        aa, p, json_integer(json_integer_value(json_object_get(aa, p)) + 1));
                }
            }
            free(v);
        } else {
            size_t j;
            json_t *so;
            json_array_foreach(sites, j, so) json_object_set_new(so, "active_alarms", json_null());
        }
    }
    return sites;
}

static enum MHD_Result h_sites(struct api *a, struct req *r, struct MHD_Connection *c,
                               const char *one)
{
    static const char *const allowed[] = {NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    if (one) {
        if (!ch_valid_id(one))
            return fail(r, c, 400, "not a site id");
        if (!in_scope(&r->who, one))
            return fail(r, c, 403, "that site is outside this token's scope");
        note_site(r, one);
    }
    json_t *sites = sites_json(a, &r->who, one, true);
    size_t i;
    json_t *so;
    json_array_foreach(sites, i, so) note_site(r, json_string_value(json_object_get(so, "site")));
    r->rows = json_array_size(sites);
    if (one) {
        json_t *o = json_incref(json_array_get(sites, 0));
        json_decref(sites);
        if (!o)
            return fail(r, c, 404, "no gateway of site '%s' has reported", one);
        return reply_json(r, c, 200, o);
    }
    return reply_json(r, c, 200, json_pack("{s:o}", "sites", sites));
}

static enum MHD_Result h_me(struct req *r, struct MHD_Connection *c)
{
    const struct who *w = &r->who;
    json_t *sites = json_array();
    if (w->all)
        json_array_append_new(sites, json_string("*"));
    for (size_t i = 0; i < w->n_sites; i++)
        json_array_append_new(sites, json_string(w->sites[i]));
    json_t *grants = json_array();
    if (w->grants & GRANT_HEALTH)
        json_array_append_new(grants, json_string("health"));
    if (w->grants & GRANT_LOCATION)
        json_array_append_new(grants, json_string("location"));
    json_t *o =
        json_pack("{s:s,s:s,s:o,s:o,s:o}", "name", w->name, "role", token_role_name(w->role),
                  "sites", w->district[0] ? (json_decref(sites), json_null()) : sites, "district",
                  w->district[0] ? json_string(w->district) : json_null(), "grants", grants);
    return reply_json(r, c, 200, o);
}

/* ---- commands --------------------------------------------------------------------- */

static bool gateway_online(struct api *a, const char *site, const char *gateway)
{
    struct presence_gw *g;
    size_t n = presence_list(a->view, &g);
    bool on = false;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(g[i].site, site) && !strcmp(g[i].gateway, gateway))
            on = g[i].online;
    free(g);
    return on;
}

static enum MHD_Result h_command(struct api *a, struct req *r, struct MHD_Connection *c)
{
    if (is_regulator(&r->who))
        return fail(r, c, 403, "a regulator token may not send commands");
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncasecmp(ct, "application/json", 16))
        return fail(r, c, 415, "Content-Type must be application/json");
    json_error_t je;
    json_t *b =
        r->body.data ? json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(b)) {
        json_decref(b);
        return fail(r, c, 400, "body: a JSON object expected");
    }
    const char *site = json_string_value(json_object_get(b, "site"));
    const char *gw = json_string_value(json_object_get(b, "gateway"));
    const char *id = json_string_value(json_object_get(b, "alarm_id"));
    const char *action = json_string_value(json_object_get(b, "action"));
    json_t *dur = json_object_get(b, "duration_s");
    const char *known[] = {"site", "gateway", "alarm_id", "action", "duration_s"};
    const char *key;
    json_t *val;
    enum MHD_Result ret = MHD_NO;
    bool done = false;
    json_object_foreach(b, key, val)
    {
        bool ok = false;
        for (size_t i = 0; i < CH_ARRAY_LEN(known); i++)
            ok = ok || !strcmp(key, known[i]);
        if (!ok && !done) {
            ret = fail(r, c, 400, "body: unknown key '%.64s'", key);
            done = true;
        }
    }
    struct ch_command cmd = {0};
    if (!done && (!site || !ch_valid_id(site)))
        ret = fail(r, c, 400, "body: 'site' must be a site id"), done = true;
    if (!done && (!gw || !ch_valid_id(gw)))
        ret = fail(r, c, 400, "body: 'gateway' must be a gateway id"), done = true;
    if (!done && (!id || strlen(id) >= sizeof cmd.alarm_id))
        ret = fail(r, c, 400, "body: 'alarm_id' must be rule:device"), done = true;
    int act = action ? ch_command_action_parse(action) : -1;
    bool admin = r->who.role == ROLE_ADMIN;
    if (!done && act < 0)
        ret = fail(r, c, 400,
                   "body: 'action' must be ack, shelve, unshelve, out_of_service or in_service"),
        done = true;
    /* the gateway checks this too (by the role written below: only a hub
     * may publish commands to it), so a hub of an older build cannot widen it */
    if (!done && (act == CH_CMD_OUT_OF_SERVICE || act == CH_CMD_IN_SERVICE) && !admin)
        ret = fail(r, c, 403, "only an admin token may take alarms out of or back into service"),
        done = true;
    if (!done && act == CH_CMD_SHELVE &&
        (!json_is_integer(dur) || json_integer_value(dur) < 1 ||
         json_integer_value(dur) > CH_SHELVE_MAX_MS / 1000))
        ret = fail(r, c, 400, "body: 'duration_s' must be whole seconds from 1 to %d",
                   CH_SHELVE_MAX_MS / 1000),
        done = true;
    if (!done && act != CH_CMD_SHELVE && dur)
        ret = fail(r, c, 400, "body: 'duration_s' goes only with shelve"), done = true;
    if (!done && !in_scope(&r->who, site))
        ret = fail(r, c, 403, "that site is outside this token's scope"), done = true;
    if (done) {
        json_decref(b);
        return ret;
    }
    note_site(r, site);
    cmd.action = act;
    ch_strlcpy(cmd.alarm_id, id, sizeof cmd.alarm_id);
    snprintf(cmd.by, sizeof cmd.by, "hub:%.60s", r->who.name);
    cmd.role = admin ? CH_ROLE_ADMIN : CH_ROLE_STAFF;
    cmd.ts_ms = ch_now_ms();
    cmd.duration_ms = act == CH_CMD_SHELVE ? (int64_t)json_integer_value(dur) * 1000 : 0;
    char *payload = ch_command_encode(&cmd);
    if (!payload) {
        json_decref(b);
        return fail(r, c, 400, "body: 'alarm_id' must be rule:device");
    }
    char kind[32], topic[256];
    snprintf(kind, sizeof kind, "cmd/%s", action);
    ch_topic(topic, sizeof topic, site, gw, kind);
    if (!gateway_online(a, site, gw)) {
        ret = fail(r, c, 409,
                   "gateway %s/%s is offline: the command would be lost; acknowledge on site", site,
                   gw);
        free(payload);
        json_decref(b);
        return ret;
    }
    int rc = sub_publish(a->mqtt, topic, payload);
    free(payload);
    if (rc) {
        json_decref(b);
        return fail(r, c, 503, "the broker cannot be reached; retry");
    }
    LOGI(MOD, r->who.name, "%s %s on %s/%s", action, id, site, gw);
    json_decref(b);
    r->rows = 1;
    return reply_json(r, c, 202, json_pack("{s:s,s:s}", "status", "sent", "topic", topic));
}

/* ---- summary ------------------------------------------------------------------------ */

static int dbl_cmp(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

double api_percentile(const double *v, size_t n, double p)
{
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

static json_t *pct_or_null(double *v, size_t n, double p)
{
    if (n == 0)
        return json_null();
    return json_real(round(api_percentile(v, n, p) * 1000.0) / 1000.0);
}

static json_t *summary_alarms(struct ch_alert *v, size_t n)
{
    double *ack = ch_xcalloc(n + 1, sizeof *ack), *clr = ch_xcalloc(n + 1, sizeof *clr);
    size_t na = 0, nc = 0;
    json_int_t by[3] = {0};
    for (size_t i = 0; i < n; i++) {
        const struct ch_alert *t = &v[i];
        by[t->priority >= 0 && t->priority < 3 ? t->priority : 0]++;
        if (t->acked_ms && t->acked_ms >= t->raised_ms)
            ack[na++] = (double)(t->acked_ms - t->raised_ms) / 1000.0;
        if (t->cleared_ms && t->cleared_ms >= t->raised_ms)
            clr[nc++] = (double)(t->cleared_ms - t->raised_ms) / 1000.0;
    }
    qsort(ack, na, sizeof *ack, dbl_cmp);
    qsort(clr, nc, sizeof *clr, dbl_cmp);
    json_t *o = json_pack("{s:I,s:{s:I,s:I,s:I},s:I,s:I,s:o,s:o,s:o}", "raised", (json_int_t)n,
                          "by_priority", "high", by[CH_PRIO_HIGH], "medium", by[CH_PRIO_MEDIUM],
                          "low", by[CH_PRIO_LOW], "acked", (json_int_t)na, "never_acked",
                          (json_int_t)(n - na), "ack_p50_s", pct_or_null(ack, na, 0.5), "ack_p90_s",
                          pct_or_null(ack, na, 0.9), "clear_p50_s", pct_or_null(clr, nc, 0.5));
    free(ack);
    free(clr);
    return o;
}

static double round2(double v)
{
    return round(v * 100.0) / 100.0;
}

static json_t *bound_or_null(double v)
{
    return fabs(v) >= 1e300 ? json_null() : json_real(v);
}

/* ---- the summary's stored figures ------------------------------------------------------
 *
 * Compliance, device online rate and completeness read every reading of the
 * range: over a month of a large site, minutes of InfluxDB. They are sums,
 * so they are kept per UTC day and hour: the figures of [from, to) are its
 * whole days, then the whole hours at its ends, each read from its kept
 * figures (measurement carehub_rollup: tags site, span (day or hour),
 * fields data (the figures as JSON), key (what they were computed with),
 * basis, computed_ms; at the span's start) or read (a day in one request,
 * the hours of a part of a day together in one) and kept once the span
 * ended rollup_after ago; and the minutes at the ends, read now. A reading that
 * arrives later for a kept hour (a backlog) marks its day stale: ingest
 * writes a carehub_rollup_stale point for the day with a new random mark,
 * behind the reading's points (see ingest.h). Kept figures record the day's
 * mark seen before the span was read (basis) and are used only while the
 * mark is still that one: a backlog whose mark is visible has its points in
 * InfluxDB already, and one that lands later changes the mark. Any hub
 * computes and keeps them; two doing it at once write the same point.
 *
 * The figures of a window, as JSON:
 *   {"env": {"<metric>|<room>": [samples, within]},
 *    "dev": {"<gateway>/<device>": intervals with a reading},
 *    "gw":  {"<gateway>": [readings, lowest seq, highest seq]}} */

#define DAY_MS          86400000LL
#define HOUR_MS         3600000LL
#define ROLLUP_DATA_MAX 60000 /* InfluxDB 1.x keeps string fields up to 64 KiB */

static json_int_t int_of(json_t *arr, size_t i)
{
    return json_integer_value(json_array_get(arr, i));
}

static const char *tag_of(json_t *s, const char *key)
{
    const char *v = json_string_value(json_object_get(json_object_get(s, "tags"), key));
    return v ? v : "";
}

/* Adds readings numbered lo..hi (count of them stored) to gateway gw. */
static void gw_add(json_t *gws, const char *gw, json_int_t count, json_int_t lo, json_int_t hi)
{
    json_t *g = json_object_get(gws, gw);
    if (!g) {
        json_object_set_new(gws, gw, json_pack("[I,I,I]", count, lo, hi));
        return;
    }
    json_array_set_new(g, 0, json_integer(int_of(g, 0) + count));
    if (lo < int_of(g, 1))
        json_array_set_new(g, 1, json_integer(lo));
    if (hi > int_of(g, 2))
        json_array_set_new(g, 2, json_integer(hi));
}

static json_t *stats_new(void)
{
    return json_pack("{s:{},s:{},s:{}}", "env", "dev", "gw");
}

/* acc += add (figures of a window after acc's). */
static void stats_merge(json_t *acc, json_t *add)
{
    const char *key;
    json_t *v;
    json_t *env = json_object_get(acc, "env"), *dev = json_object_get(acc, "dev");
    json_object_foreach(json_object_get(add, "env"), key, v)
    {
        json_t *p = json_object_get(env, key);
        if (!p)
            json_object_set_new(env, key, json_pack("[I,I]", int_of(v, 0), int_of(v, 1)));
        else
            json_object_set_new(
                env, key,
                json_pack("[I,I]", int_of(p, 0) + int_of(v, 0), int_of(p, 1) + int_of(v, 1)));
    }
    json_object_foreach(json_object_get(add, "dev"), key, v) json_object_set_new(
        dev, key,
        json_integer(json_integer_value(json_object_get(dev, key)) + json_integer_value(v)));
    json_object_foreach(json_object_get(add, "gw"), key, v)
        gw_add(json_object_get(acc, "gw"), key, int_of(v, 0), int_of(v, 1), int_of(v, 2));
}

/* The figures of the span starting at t in by (an object: start -> figures),
 * made empty when new. */
static json_t *bucket(json_t *by, int64_t t)
{
    char at[24];
    snprintf(at, sizeof at, "%" PRId64, t);
    json_t *st = json_object_get(by, at);
    if (!st) {
        st = stats_new();
        json_object_set_new(by, at, st);
    }
    return st;
}

/* Reads the figures of [from, to) from InfluxDB in one request: *out is an
 * object of start (as text) -> figures, one per unit (GROUP BY time; an
 * empty span has none), or with unit 0 just from -> figures. */
static int window_stats(struct api *a, const char *site, int64_t from, int64_t to, int64_t unit,
                        json_t **out, char *err, size_t errn)
{
    const struct limit_def *lim = a->lims;
    size_t nl = a->n_lims;
    int64_t bucket_ms = a->cfg->api.device_timeout_ms;
    char by_time[48] = "";
    if (unit)
        snprintf(by_time, sizeof by_time, "time(%" PRId64 "ms), ", unit);
    struct qb q;
    qb_init(&q);
    /* statements 2i, 2i+1: the readings of limit i per room, all and within */
    for (size_t i = 0; i < nl; i++) {
        for (int within = 0; within < 2; within++) {
            qb_add(&q, "SELECT count(");
            qb_ident(&q, lim[i].metric);
            qb_add(&q, ") FROM ");
            qb_ident(&q, lim[i].measurement);
            qb_add(&q, " WHERE \"site\" = ");
            qb_str(&q, site);
            where_time(&q, from, to);
            if (within && lim[i].min > -1e300) {
                qb_add(&q, " AND ");
                qb_ident(&q, lim[i].metric);
                qb_add(&q, " >= %.17g", lim[i].min);
            }
            if (within && lim[i].max < 1e300) {
                qb_add(&q, " AND ");
                qb_ident(&q, lim[i].metric);
                qb_add(&q, " <= %.17g", lim[i].max);
            }
            qb_add(&q, " GROUP BY %s\"room\"; ", by_time);
        }
    }
    /* statement 2nl: per device, the intervals in which it sent something */
    qb_add(&q, "SELECT count(\"c\") FROM (SELECT count(\"seq\") AS \"c\" FROM /.*/ WHERE "
               "\"site\" = ");
    qb_str(&q, site);
    where_time(&q, from, to);
    qb_add(&q,
           " GROUP BY time(%" PRId64 "ms), \"gateway\", \"device\") GROUP BY %s\"gateway\", "
           "\"device\"; ",
           bucket_ms, by_time);
    /* statement 2nl+1: per gateway and measurement, the reading numbers stored */
    qb_add(&q, "SELECT count(\"seq\"), min(\"seq\"), max(\"seq\") FROM /.*/ WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, from, to);
    qb_add(&q, " GROUP BY %s\"gateway\"", by_time);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    if (rc)
        return rc;
    json_t *by = json_object();
    char key[3 * CH_ID_MAX];
    size_t j, k;
    json_t *s, *row;
#define EACH_ROW(stmt)                                                                             \
    json_array_foreach(influxq_series(res, stmt), j, s)                                            \
        json_array_foreach(json_object_get(s, "values"), k, row)
    for (size_t i = 0; i < nl; i++) {
        for (int within = 0; within < 2; within++) {
            EACH_ROW(2 * i + (size_t)within)
            {
                json_int_t n = int_of(row, 1);
                if (n <= 0)
                    continue;
                json_t *env = json_object_get(bucket(by, unit ? int_at(row, 0) : from), "env");
                snprintf(key, sizeof key, "%s|%s", lim[i].metric, tag_of(s, "room"));
                json_t *pair = json_object_get(env, key);
                if (!pair) {
                    pair = json_pack("[i,i]", 0, 0);
                    json_object_set_new(env, key, pair);
                }
                json_array_set_new(pair, (size_t)within, json_integer(n));
            }
        }
    }
    EACH_ROW(2 * nl)
    {
        json_int_t n = int_of(row, 1);
        if (self_metrics_series(s) || n <= 0)
            continue;
        json_t *dev = json_object_get(bucket(by, unit ? int_at(row, 0) : from), "dev");
        snprintf(key, sizeof key, "%s/%s", tag_of(s, "gateway"), tag_of(s, "device"));
        if (n > json_integer_value(json_object_get(dev, key))) /* in two measurements: the busier */
            json_object_set_new(dev, key, json_integer(n));
    }
    EACH_ROW(2 * nl + 1)
    {
        const char *gw = tag_of(s, "gateway");
        if (!gw[0] || !json_is_integer(json_array_get(row, 2)))
            continue; /* an empty span */
        gw_add(json_object_get(bucket(by, unit ? int_at(row, 0) : from), "gw"), gw, int_of(row, 1),
               int_of(row, 2), int_of(row, 3));
    }
#undef EACH_ROW
    json_decref(res);
    *out = by;
    return 0;
}

/* The figures of [from, to) as one window: one request. */
static int window_total(struct api *a, const char *site, int64_t from, int64_t to, json_t **out,
                        char *err, size_t errn)
{
    json_t *by;
    int rc = window_stats(a, site, from, to, 0, &by, err, errn);
    if (rc)
        return rc;
    *out = json_incref(bucket(by, from));
    json_decref(by);
    return 0;
}

static int str_cmp(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The keys of object o, sorted (caller frees the array, not the keys). */
static const char **sorted_keys(json_t *o, size_t *n)
{
    const char **k = ch_xcalloc(json_object_size(o) + 1, sizeof *k);
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) k[i++] = key;
    qsort(k, i, sizeof *k, str_cmp);
    *n = i;
    return k;
}

static json_t *pct(json_int_t part, json_int_t whole)
{
    return whole > 0 ? json_real(round2(100.0 * (double)part / (double)whole)) : json_null();
}

/* The summary's environment, devices and completeness from the figures of
 * [from, to) of site. */
static void stats_render(struct api *a, const char *site, json_t *st, int64_t from, int64_t to,
                         json_t **env_out, json_t **dev_out, json_t **comp_out)
{
    /* environment: per limit, its rooms in order */
    json_t *env = json_object_get(st, "env"), *out = json_array();
    size_t nk;
    const char **keys = sorted_keys(env, &nk);
    for (size_t i = 0; i < a->n_lims; i++) {
        const struct limit_def *l = &a->lims[i];
        size_t ml = strlen(l->metric);
        for (size_t k = 0; k < nk; k++) {
            if (strncmp(keys[k], l->metric, ml) || keys[k][ml] != '|')
                continue;
            json_t *p = json_object_get(env, keys[k]);
            json_int_t total = int_of(p, 0), ok = int_of(p, 1);
            if (total <= 0)
                continue;
            json_array_append_new(
                out, json_pack("{s:s,s:s,s:o,s:o,s:I,s:I,s:f}", "room", keys[k] + ml + 1, "metric",
                               l->metric, "min", bound_or_null(l->min), "max",
                               bound_or_null(l->max), "samples", total, "within", ok, "within_pct",
                               round2(100.0 * (double)ok / (double)total)));
        }
    }
    free(keys);
    *env_out = out;

    /* devices: the inventory of the gateways' births, or those seen */
    int64_t bucket = a->cfg->api.device_timeout_ms;
    /* intervals of the range, as InfluxDB's GROUP BY time cuts them */
    int64_t nb = (to - 1) / bucket - from / bucket + 1;
    json_t *dev = json_object_get(st, "dev");
    json_int_t intervals = 0;
    const char *key;
    json_t *v;
    json_object_foreach(dev, key, v) intervals += json_integer_value(v);
    struct presence_gw *g;
    size_t ng = presence_list(a->view, &g);
    size_t inventory = 0;
    for (size_t k = 0; k < ng; k++)
        if (!strcmp(g[k].site, site))
            inventory += g[k].n_devices;
    free(g);
    size_t total = inventory > json_object_size(dev) ? inventory : json_object_size(dev);
    *dev_out = json_pack("{s:I,s:o}", "total", (json_int_t)total, "online_pct",
                         pct(intervals, (json_int_t)total * nb));

    /* completeness: per gateway, over every measurement */
    json_t *gws = json_object_get(st, "gw"), *list = json_array();
    json_int_t rec = 0, exp = 0;
    keys = sorted_keys(gws, &nk);
    for (size_t k = 0; k < nk; k++) {
        json_t *gv = json_object_get(gws, keys[k]);
        json_int_t r = int_of(gv, 0), e = int_of(gv, 2) - int_of(gv, 1) + 1;
        rec += r;
        exp += e;
        json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:o}", "gateway", keys[k], "received",
                                              r, "expected", e, "pct", pct(r, e)));
    }
    free(keys);
    *comp_out = json_pack("{s:I,s:I,s:o,s:o}", "received", rec, "expected", exp, "pct",
                          pct(rec, exp), "gateways", list);
}

/* What a kept day's figures were computed with: they are recomputed when it
 * changes (limits, device_timeout). */
static void rollup_key(const struct api *a, char out[17])
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    char buf[256];
    int n = snprintf(buf, sizeof buf, "v1 %" PRId64, a->cfg->api.device_timeout_ms);
    for (int i = 0; i < n; i++)
        h = (h ^ (unsigned char)buf[i]) * 1099511628211u;
    for (size_t l = 0; l < a->n_lims; l++) {
        n = snprintf(buf, sizeof buf, ";%s %s %.17g %.17g", a->lims[l].measurement,
                     a->lims[l].metric, a->lims[l].min, a->lims[l].max);
        for (int i = 0; i < n; i++)
            h = (h ^ (unsigned char)buf[i]) * 1099511628211u;
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

static void rollup_keep(struct api *a, const char *site, const char *span, int64_t start,
                        json_t *st, const char *key, const char *basis)
{
    char *data = json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS);
    if (!data || strlen(data) > ROLLUP_DATA_MAX) {
        LOGW(MOD, site,
             "the figures of one %s are too large to keep (%zu bytes): computed each time", span,
             data ? strlen(data) : 0);
        free(data);
        return;
    }
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "carehub_rollup");
    lp_tag(&b, "site", site);
    lp_tag(&b, "span", span);
    lp_field_str(&b, "basis", basis);
    lp_field_int(&b, "computed_ms", ch_now_ms());
    lp_field_str(&b, "data", data);
    lp_field_str(&b, "key", key);
    lp_end(&b, start);
    free(data);
    size_t len, lines;
    char *lp = lp_take(&b, &len, &lines);
    if (lp)
        influx_enqueue_once(a->writer, lp, len, lines);
}

static int64_t floor_to(int64_t t, int64_t unit)
{
    return t / unit * unit;
}

static int64_t ceil_to(int64_t t, int64_t unit)
{
    return (t + unit - 1) / unit * unit;
}

/* The figures of the whole spans [u0, u1) of unit (a day or an hour), added
 * to acc. One request reads what is kept and the days' marks; kept figures
 * are used while their basis is their day's mark; the others are read (a
 * day in one request each, hours together in one) and kept once the span
 * ended rollup_after ago. */
static int spans_stats(struct api *a, const char *site, int64_t u0, int64_t u1, int64_t unit,
                       json_t *acc, char *err, size_t errn)
{
    const char *span = unit == DAY_MS ? "day" : "hour";
    char key[17];
    rollup_key(a, key);
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT \"data\", \"key\", \"basis\" FROM \"carehub_rollup\" WHERE \"site\" = ");
    qb_str(&q, site);
    qb_add(&q, " AND \"span\" = ");
    qb_str(&q, span);
    where_time(&q, u0, u1);
    qb_add(&q, "; SELECT \"mark\" FROM \"carehub_rollup_stale\" WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, floor_to(u0, DAY_MS), u1);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    if (rc)
        return rc;
    json_t *kept = json_object(), *marks = json_object();
    char at[24];
    size_t i;
    json_t *row;
    json_t *rs = json_array_get(influxq_series(res, 0), 0);
    int cd = influxq_col(rs, "data"), ck = influxq_col(rs, "key"), cb = influxq_col(rs, "basis");
    json_array_foreach(json_object_get(rs, "values"), i, row)
    {
        if (strcmp(str_at(row, ck), key))
            continue; /* computed with other limits */
        snprintf(at, sizeof at, "%" PRId64, int_at(row, 0));
        json_object_set_new(kept, at, json_pack("[s,s]", str_at(row, cd), str_at(row, cb)));
    }
    json_t *ms = json_array_get(influxq_series(res, 1), 0);
    int cm = influxq_col(ms, "mark");
    json_array_foreach(json_object_get(ms, "values"), i, row)
    {
        snprintf(at, sizeof at, "%" PRId64, int_at(row, 0));
        json_object_set_new(marks, at, json_string(str_at(row, cm)));
    }
    json_decref(res);
    /* the figures of each span: kept ones, or null */
    json_t *have = json_object();
    int64_t lo = INT64_MAX, hi = 0; /* the spans to read */
    for (int64_t u = u0; u < u1; u += unit) {
        snprintf(at, sizeof at, "%" PRId64, floor_to(u, DAY_MS));
        const char *mark = json_string_value(json_object_get(marks, at));
        snprintf(at, sizeof at, "%" PRId64, u);
        json_t *k = json_object_get(kept, at), *st = NULL;
        if (k && !strcmp(json_string_value(json_array_get(k, 1)), mark ? mark : ""))
            st = json_loads(json_string_value(json_array_get(k, 0)), 0, NULL);
        if (!st) {
            lo = u < lo ? u : lo;
            hi = u + unit;
        }
        json_object_set_new(have, at, st ? st : json_null());
    }
    int64_t keep_before = ch_now_ms() - a->cfg->rollup_after_ms;
    json_t *read = NULL;
    if (hi && unit != DAY_MS) /* the hours to read, in one request */
        rc = window_stats(a, site, lo, hi, unit, &read, err, errn);
    for (int64_t u = u0; u < u1 && !rc; u += unit) {
        snprintf(at, sizeof at, "%" PRId64, u);
        json_t *st = json_incref(json_object_get(have, at));
        if (json_is_null(st)) {
            json_decref(st);
            if (unit == DAY_MS)
                rc = window_total(a, site, u, u + unit, &st, err, errn);
            else
                st = json_incref(bucket(read, u));
            if (rc)
                break;
            char day[24];
            snprintf(day, sizeof day, "%" PRId64, floor_to(u, DAY_MS));
            const char *mark = json_string_value(json_object_get(marks, day));
            if (u + unit <= keep_before)
                rollup_keep(a, site, span, u, st, key, mark ? mark : "");
        }
        stats_merge(acc, st);
        json_decref(st);
    }
    json_decref(read);
    json_decref(have);
    json_decref(kept);
    json_decref(marks);
    return rc;
}

/* The figures of [s, e), shorter than a day: its whole hours from kept
 * figures, the partial hours at its ends read now. */
static int part_stats(struct api *a, const char *site, int64_t s, int64_t e, json_t *acc, char *err,
                      size_t errn)
{
    int64_t h0 = ceil_to(s, HOUR_MS), h1 = floor_to(e, HOUR_MS);
    if (h0 >= h1)
        h0 = h1 = e;
    int rc = h0 < h1 ? spans_stats(a, site, h0, h1, HOUR_MS, acc, err, errn) : 0;
    const int64_t part[2][2] = {{s, h0}, {h1, e}};
    for (int p = 0; p < 2 && !rc; p++) {
        if (part[p][0] >= part[p][1])
            continue;
        json_t *st;
        rc = window_total(a, site, part[p][0], part[p][1], &st, err, errn);
        if (!rc) {
            stats_merge(acc, st);
            json_decref(st);
        }
    }
    return rc;
}

/* The figures of [from, to): whole UTC days and hours from kept figures,
 * the rest read now. *out: caller decrefs. */
static int range_stats(struct api *a, const char *site, int64_t from, int64_t to, json_t **out,
                       char *err, size_t errn)
{
    int64_t d0 = ceil_to(from, DAY_MS), d1 = floor_to(to, DAY_MS);
    json_t *acc = stats_new();
    int rc;
    if (d0 >= d1) { /* no whole day */
        rc = part_stats(a, site, from, to, acc, err, errn);
    } else {
        rc = spans_stats(a, site, d0, d1, DAY_MS, acc, err, errn);
        if (!rc && from < d0)
            rc = part_stats(a, site, from, d0, acc, err, errn);
        if (!rc && d1 < to)
            rc = part_stats(a, site, d1, to, acc, err, errn);
    }
    if (rc) {
        json_decref(acc);
        return rc;
    }
    *out = acc;
    return 0;
}

static enum MHD_Result h_summary(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_param(r, c, true, &site, &ret) || !time_range(r, c, &from, &to, &ret))
        return ret;
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_occurrences(a, &r->who, site, from, to, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *alarms = summary_alarms(v, n);
    free(v);
    json_t *st, *env, *dev, *comp;
    rc = range_stats(a, site, from, to, &st, err, sizeof err);
    if (rc) {
        json_decref(alarms);
        return fail_query(r, c, rc, err);
    }
    stats_render(a, site, st, from, to, &env, &dev, &comp);
    json_decref(st);
    r->rows = 1;
    return reply_json(r, c, 200,
                      json_pack("{s:s,s:I,s:I,s:o,s:o,s:o,s:o}", "site", site, "from_ms",
                                (json_int_t)from, "to_ms", (json_int_t)to, "alarms", alarms,
                                "environment", env, "devices", dev, "completeness", comp));
}

/* ---- series (charts) ---------------------------------------------------------------- */

static enum MHD_Result h_series(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "measurement", "metric", "from",
                                          "to",   "every",       NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_param(r, c, true, &site, &ret) || !time_range(r, c, &from, &to, &ret))
        return ret;
    const char *meas = arg(c, "measurement") ? arg(c, "measurement") : "environment";
    const char *metric = arg(c, "metric");
    if (!ch_valid_id(meas))
        return fail(r, c, 400, "parameter 'measurement': not an identifier");
    if (!metric || !ch_valid_id(metric))
        return fail(r, c, 400, "parameter 'metric' is required: an identifier");
    int64_t every = 0;
    const char *es = arg(c, "every");
    long long secs;
    if (es && !ch_parse_int(es, &secs) && secs > 0 && secs < 400LL * 86400)
        every = secs * 1000; /* bare seconds */
    else if (es && (ch_parse_duration_ms(es, &every) || every < 1000))
        return fail(r, c, 400, "parameter 'every': seconds, or a duration of at least 1s (\"5m\")");
    int64_t min_every = (to - from + SERIES_POINTS - 1) / SERIES_POINTS;
    if (every < min_every)
        every = min_every < 1000 ? 1000 : min_every;
    if (!may_read(a, &r->who, meas, metric))
        return fail(r, c, 403, "%s of %s: this token has no grant for that series", metric, meas);
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT mean(");
    qb_ident(&q, metric);
    qb_add(&q, ") FROM ");
    qb_ident(&q, meas);
    qb_add(&q, " WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, from, to);
    qb_add(&q, " GROUP BY time(%" PRId64 "ms), \"room\", \"device\" fill(none)", every);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&a->q, &q, &res, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *out = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        json_t *tags = json_object_get(s, "tags");
        json_t *pts = json_array();
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            json_t *v = json_array_get(row, 1);
            if (!json_is_number(v))
                continue;
            json_array_append_new(pts, json_pack("[I,f]", int_at(row, 0),
                                                 round(json_number_value(v) * 1000.0) / 1000.0));
            r->rows++;
        }
        json_array_append_new(
            out,
            json_pack("{s:s,s:s,s:o}", "room",
                      json_string_value(json_object_get(tags, "room")) ?: "", "device",
                      json_string_value(json_object_get(tags, "device")) ?: "", "points", pts));
    }
    json_decref(res);
    return reply_json(r, c, 200,
                      json_pack("{s:s,s:s,s:I,s:o}", "measurement", meas, "metric", metric,
                                "every_s", (json_int_t)(every / 1000), "series", out));
}

/* ---- export (streamed) ----------------------------------------------------------------- */

/* An export reads InfluxDB one window at a time and hands libmicrohttpd the
 * rows of that window; memory stays at one window of one site whatever the
 * range. */
struct export
{
    struct api *a;
    struct req *r; /* for the row count (the request outlives the response) */
    struct who who;
    char site[CH_ID_MAX];
    bool alarms, csv;
    int64_t from, to, cursor;
    char *meas; /* telemetry: the measurements to read, as a FROM list */
    char *buf;
    size_t len, off, cap;
    bool started, done;
};

static void ex_put(struct export *e, const char *s, size_t n)
{
    if (e->len + n + 1 > e->cap) {
        size_t cap = e->cap ? e->cap : 65536;
        while (cap < e->len + n + 1)
            cap *= 2;
        e->buf = ch_xrealloc(e->buf, cap);
        e->cap = cap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
}

static void ex_puts(struct export *e, const char *s)
{
    ex_put(e, s, strlen(s));
}

/* A CSV field: quoted when it holds a comma, quote or newline; a leading
 * = + - @ is prefixed with ' so that a spreadsheet does not run it. */
static void ex_csv(struct export *e, const char *s, bool last)
{
    bool quote = strpbrk(s, ",\"\r\n") != NULL;
    bool formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@';
    bool number = s[0] == '-' && s[1] >= '0' && s[1] <= '9'; /* a negative number is fine */
    if (quote)
        ex_puts(e, "\"");
    if (formula && !number)
        ex_puts(e, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            ex_puts(e, "\"");
        ex_put(e, p, 1);
    }
    if (quote)
        ex_puts(e, "\"");
    ex_puts(e, last ? "\r\n" : ",");
}

static void iso_time(int64_t ms, char out[32])
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static const char *const telemetry_cols[] = {"time", "measurement", "gateway", "device",
                                             "room", "quality",     "metric",  "value"};
static const char *const alarm_cols[] = {
    "time",    "site",      "gateway",  "alarm_id",   "event",    "state",  "priority",
    "rule",    "device",    "room",     "bed",        "resident", "metric", "value",
    "message", "raised_ms", "acked_ms", "cleared_ms", "acked_by"};

static void ex_row_begin(struct export *e)
{
    if (!e->csv)
        ex_puts(e, e->r->rows ? ",\n" : "\n");
    e->r->rows++;
}

/* One row given as parallel names and text values (NULL: null). */
static void ex_row(struct export *e, const char *const *cols, const char **vals, const bool *num,
                   size_t n)
{
    ex_row_begin(e);
    if (e->csv) {
        for (size_t i = 0; i < n; i++)
            ex_csv(e, vals[i] ? vals[i] : "", i + 1 == n);
        return;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *v = !vals[i]        ? json_null()
                    : num && num[i] ? json_real(strtod(vals[i], NULL))
                                    : json_string(vals[i]);
        json_object_set_new(o, cols[i], v);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    ex_puts(e, s);
    free(s);
}

static void ex_telemetry_window(struct export *e, json_t *res)
{
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        const char *meas = json_string_value(json_object_get(s, "name"));
        json_t *cols = json_object_get(s, "columns");
        int ct = influxq_col(s, "time"), cg = influxq_col(s, "gateway"),
            cd = influxq_col(s, "device"), cr = influxq_col(s, "room"),
            cq = influxq_col(s, "quality");
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            char ts[32];
            iso_time(int_at(row, ct), ts);
            size_t k;
            json_t *col;
            json_array_foreach(cols, k, col)
            {
                const char *name = json_string_value(col);
                json_t *v = json_array_get(row, k);
                if ((int)k == ct || (int)k == cg || (int)k == cd || (int)k == cr || (int)k == cq ||
                    !json_is_number(v) || !strcmp(name, "seq") || !strcmp(name, "site"))
                    continue;
                if (!may_read(e->a, &e->who, meas, name))
                    continue;
                char val[LP_FLOAT_MAX];
                lp_format_float(val, json_number_value(v));
                const char *vals[] = {
                    ts,   meas, str_at(row, cg), str_at(row, cd), str_at(row, cr), str_at(row, cq),
                    name, val};
                static const bool num[] = {0, 0, 0, 0, 0, 0, 0, 1};
                ex_row(e, telemetry_cols, vals, num, CH_ARRAY_LEN(vals));
            }
        }
    }
}

static void ex_alarm_window(struct export *e, json_t *res)
{
    bool reg = is_regulator(&e->who);
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            struct ch_alert t;
            row_to_alert(s, row, &t);
            char ts[32], val[LP_FLOAT_MAX] = "", rms[24] = "", ams[24] = "", cms[24] = "";
            iso_time(t.ts_ms, ts);
            if (t.has_value)
                lp_format_float(val, t.value);
            if (t.raised_ms)
                snprintf(rms, sizeof rms, "%" PRId64, t.raised_ms);
            if (t.acked_ms)
                snprintf(ams, sizeof ams, "%" PRId64, t.acked_ms);
            if (t.cleared_ms)
                snprintf(cms, sizeof cms, "%" PRId64, t.cleared_ms);
            struct shown sh;
            privacy(e->a, &t, reg, &sh);
            const char *resident = sh.resident, *message = sh.message, *by = sh.by;
            const char *vals[] = {ts,
                                  t.site,
                                  t.gateway,
                                  t.alarm_id,
                                  ch_alarm_event_name(t.event),
                                  ch_alarm_state_name(t.state),
                                  ch_priority_name(t.priority),
                                  t.rule,
                                  t.device,
                                  t.room,
                                  t.bed,
                                  resident,
                                  t.metric,
                                  t.has_value ? val : NULL,
                                  message,
                                  rms[0] ? rms : NULL,
                                  ams[0] ? ams : NULL,
                                  cms[0] ? cms : NULL,
                                  by};
            static const bool num[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0};
            ex_row(e, alarm_cols, vals, num, CH_ARRAY_LEN(vals));
        }
    }
}

/* Reads the next window into the buffer. Returns false when the export
 * cannot go on (the stream then ends with an error: the client sees a
 * truncated download, not a complete-looking one). */
static bool ex_next_window(struct export *e)
{
    int64_t end = e->cursor + EXPORT_WINDOW_MS < e->to ? e->cursor + EXPORT_WINDOW_MS : e->to;
    struct qb q;
    qb_init(&q);
    if (e->alarms)
        qb_add(&q, "SELECT * FROM \"alarm\" WHERE \"site\" = ");
    else
        qb_add(&q, "SELECT * FROM %s WHERE \"site\" = ", e->meas);
    qb_str(&q, e->site);
    where_time(&q, e->cursor, end);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&e->a->q, &q, &res, err, sizeof err);
    if (rc) {
        LOGW(MOD, e->site, "export stopped at %" PRId64 ": %s", e->cursor, err);
        return false;
    }
    if (e->alarms)
        ex_alarm_window(e, res);
    else
        ex_telemetry_window(e, res);
    json_decref(res);
    e->cursor = end;
    return true;
}

static ssize_t ex_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct export *e = cls;
    (void)pos;
    while (e->off == e->len) {
        e->off = e->len = 0;
        if (e->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!e->started) {
            e->started = true;
            if (e->csv) {
                const char *const *cols = e->alarms ? alarm_cols : telemetry_cols;
                size_t n = e->alarms ? CH_ARRAY_LEN(alarm_cols) : CH_ARRAY_LEN(telemetry_cols);
                for (size_t i = 0; i < n; i++)
                    ex_csv(e, cols[i], i + 1 == n);
            } else {
                ex_puts(e, "[");
            }
            continue;
        }
        if (e->cursor >= e->to || !e->meas) {
            if (!e->csv)
                ex_puts(e, "\n]\n");
            e->done = true;
            continue;
        }
        if (!ex_next_window(e)) {
            e->r->status = 500;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = e->len - e->off < max ? e->len - e->off : max;
    memcpy(out, e->buf + e->off, n);
    e->off += n;
    return (ssize_t)n;
}

static void ex_free(void *cls)
{
    struct export *e = cls;
    free(e->buf);
    free(e->meas);
    free(e->who.sites);
    free(e);
}

/* The measurements a telemetry export reads: those of the site but the
 * hub's own and the alarms, and for a regulator without the grant, not the
 * wholly sensitive ones. NULL: none. */
static char *export_measurements(struct api *a, const struct who *w, int *rc, char *err,
                                 size_t errn)
{
    json_t *res;
    *rc = influxq_run(&a->q, "SHOW MEASUREMENTS", &res, err, errn);
    if (*rc)
        return NULL;
    struct qb q;
    qb_init(&q);
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            const char *m = str_at(row, 0);
            if (!m[0] || !strcmp(m, "alarm") || !strncmp(m, "carehub_", 8))
                continue;
            /* a regulator with none of the grants a measurement's series
             * need skips it; the others are filtered per metric */
            unsigned need = needed_grant(a, m, NULL);
            if (is_regulator(w) && need && (need & w->grants) == 0)
                continue;
            if (q.len)
                qb_add(&q, ", ");
            qb_ident(&q, m);
        }
    }
    json_decref(res);
    return q.s;
}

static enum MHD_Result h_export(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", "data", "format", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_param(r, c, true, &site, &ret) || !time_range(r, c, &from, &to, &ret))
        return ret;
    const char *data = arg(c, "data") ? arg(c, "data") : "telemetry";
    const char *format = arg(c, "format") ? arg(c, "format") : "csv";
    if (strcmp(data, "telemetry") && strcmp(data, "alarms"))
        return fail(r, c, 400, "parameter 'data': telemetry or alarms");
    if (strcmp(format, "csv") && strcmp(format, "json"))
        return fail(r, c, 400, "parameter 'format': csv or json");
    struct export *e = ch_xcalloc(1, sizeof *e);
    e->a = a;
    e->r = r;
    e->who = r->who;
    e->who.sites = NULL; /* the site is checked already */
    e->who.n_sites = 0;
    ch_strlcpy(e->site, site, sizeof e->site);
    e->alarms = !strcmp(data, "alarms");
    e->csv = !strcmp(format, "csv");
    e->from = e->cursor = from;
    e->to = to;
    if (!e->alarms) {
        int rc;
        char err[512];
        e->meas = export_measurements(a, &r->who, &rc, err, sizeof err);
        if (rc) {
            ex_free(e);
            return fail_query(r, c, rc, err);
        }
    } else {
        e->meas = ch_xstrdup("\"alarm\"");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, ex_read, e, ex_free);
    if (!resp) {
        ex_free(e);
        return MHD_NO;
    }
    char fname[256], disp[300], f1[32], f2[32];
    iso_time(from, f1);
    iso_time(to, f2);
    f1[10] = f2[10] = '\0';
    snprintf(fname, sizeof fname, "%s-%s-%s-%s.%s", site, data, f1, f2, format);
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", fname);
    MHD_add_response_header(resp, "Content-Type",
                            e->csv ? "text/csv; charset=utf-8" : "application/json; charset=utf-8");
    MHD_add_response_header(resp, "Content-Disposition", disp);
    ch_http_security_headers(resp, true);
    r->status = 200;
    ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- audit --------------------------------------------------------------------------------- */

static void audit_write(struct api *a, struct req *r)
{
    int64_t now = ch_now_ms();
    int64_t ms = ch_mono_ms() - r->start_mono;
    json_t *o =
        json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:I,s:I}", "ts_ms", (json_int_t)now, "hub",
                  a->cfg->mqtt.client_id, "token", r->authed ? r->who.name : "-", "role",
                  r->authed ? token_role_name(r->who.role) : "-", "method", r->method, "path",
                  r->path, "query", r->query, "sites", r->sites, "status", (int)r->status, "rows",
                  (json_int_t)r->rows, "ms", (json_int_t)ms);
    json_object_set_new(o, "remote", json_string(r->addr));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    /* the point: distinct times per hub, so that two requests in one
     * millisecond stay two points */
    struct lp_buf b;
    lp_init(&b);
    pthread_mutex_lock(&a->audit_mu);
    if (now <= a->audit_last_ms)
        now = a->audit_last_ms + 1;
    a->audit_last_ms = now;
    if (a->audit && line) {
        fputs(line, a->audit);
        fputc('\n', a->audit);
        fflush(a->audit);
    }
    pthread_mutex_unlock(&a->audit_mu);
    free(line);
    lp_begin(&b, "carehub_audit");
    lp_tag(&b, "hub", a->cfg->mqtt.client_id);
    lp_tag(&b, "role", r->authed ? token_role_name(r->who.role) : "-");
    lp_tag(&b, "token", r->authed ? r->who.name : "-");
    lp_field_str(&b, "method", r->method);
    lp_field_str(&b, "path", r->path);
    lp_field_str(&b, "query", r->query);
    lp_field_str(&b, "sites", r->sites);
    lp_field_int(&b, "status", r->status);
    lp_field_int(&b, "rows", (int64_t)r->rows);
    lp_field_int(&b, "ms", ms);
    lp_field_str(&b, "remote", r->addr);
    lp_end(&b, now);
    size_t len, lines;
    char *data = lp_take(&b, &len, &lines);
    if (data)
        influx_enqueue_once(a->writer, data, len, lines);
}

static enum MHD_Result h_audit(struct api *a, struct req *r, struct MHD_Connection *c)
{
    if (r->who.role != ROLE_ADMIN)
        return fail(r, c, 403, "only an admin may read the audit log");
    static const char *const allowed[] = {"from", "to", "token", "limit", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    int64_t from, to;
    if (!time_range(r, c, &from, &to, &ret))
        return ret;
    const char *tok = arg(c, "token");
    if (tok && !ch_valid_id(tok))
        return fail(r, c, 400, "parameter 'token': a token name");
    long long limit = 1000;
    const char *ls = arg(c, "limit");
    if (ls && (ch_parse_int(ls, &limit) || limit < 1 || limit > ALARMS_LIMIT_MAX))
        return fail(r, c, 400, "parameter 'limit': a whole number from 1 to %d", ALARMS_LIMIT_MAX);
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"carehub_audit\" WHERE time >= ");
    qb_time(&q, from);
    qb_add(&q, " AND time < ");
    qb_time(&q, to);
    if (tok) {
        qb_add(&q, " AND \"token\" = ");
        qb_str(&q, tok);
    }
    qb_add(&q, " ORDER BY time DESC LIMIT %lld", limit);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&a->q, &q, &res, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *out = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        json_t *cols = json_object_get(s, "columns");
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            json_t *o = json_object();
            size_t k;
            json_t *col;
            json_array_foreach(cols, k, col)
            {
                const char *name = json_string_value(col);
                json_t *v = json_array_get(row, k);
                json_object_set(o, !strcmp(name, "time") ? "ts_ms" : name, v ? v : json_null());
            }
            json_t *sites = json_array();
            const char *sl = json_string_value(json_object_get(o, "sites"));
            char buf[256];
            ch_strlcpy(buf, sl ? sl : "", sizeof buf);
            char *save = NULL;
            for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
                json_array_append_new(sites, json_string(t));
            json_object_set_new(o, "sites", sites);
            json_array_append_new(out, o);
        }
    }
    json_decref(res);
    r->rows = json_array_size(out);
    return reply_json(r, c, 200, json_pack("{s:o}", "entries", out));
}

/* ---- live events ------------------------------------------------------------------------- */

static bool want_event(const void *ctx, void *arg)
{
    const struct who *w = ctx;
    const char **what = arg; /* site, "r" for the regulators' variant or "s" */
    if (!in_scope(w, what[0]))
        return false;
    return is_regulator(w) == (what[1][0] == 'r');
}

void api_alert(struct api *a, const struct ch_alert *t)
{
    if (!a)
        return;
    for (int reg = 0; reg < 2; reg++) {
        json_t *o = alarm_object(a, t, reg);
        char *data = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!data)
            continue;
        char *ev = ch_sse_format("alarm", data);
        free(data);
        const char *what[2] = {t->site, reg ? "r" : "s"};
        ch_sse_publish(&a->sse, ev, want_event, what);
        free(ev);
    }
}

void api_site_changed(struct api *a, const char *site)
{
    if (!a || !ch_sse_clients(&a->sse))
        return;
    struct who all = {.all = true};
    json_t *sites = sites_json(a, &all, site, false);
    json_t *o = json_array_get(sites, 0);
    char *data = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(sites);
    if (!data)
        return;
    char *ev = ch_sse_format("site", data);
    free(data);
    for (int reg = 0; reg < 2; reg++) {
        const char *what[2] = {site, reg ? "r" : "s"};
        ch_sse_publish(&a->sse, ev, want_event, what);
    }
    free(ev);
}

static enum MHD_Result busy(struct MHD_Connection *c)
{
    return ch_http_send_body(
        c, 503, ch_xstrdup("{\"error\":\"unavailable\",\"message\":\"too many live clients\"}"),
        "Retry-After", "5");
}

static enum MHD_Result h_events(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    /* the stream's own copy of the scope, sites inline */
    size_t n = r->who.n_sites;
    struct who *w = ch_xcalloc(1, sizeof *w + n * CH_ID_MAX);
    *w = r->who;
    w->sites = (char(*)[CH_ID_MAX])(w + 1);
    memcpy(w->sites, r->who.sites, n * CH_ID_MAX);
    char addr[64];
    ch_http_client_addr(c, addr, sizeof addr);
    r->status = 200;
    return ch_sse_open(&a->sse, c, NULL, NULL, w, r->who.name, addr, busy);
}

/* ---- static files (the web console) ---------------------------------------------------- */

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < CH_ARRAY_LEN(types); i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return NULL;
}

/* A path of the web console: "/" is index.html; otherwise segments of
 * [A-Za-z0-9_.-] not starting with a dot, no "..", a known file type. */
static bool safe_path(const char *p)
{
    if (p[0] != '/' || strlen(p) > PATH_MAX_LEN)
        return false;
    bool seg_start = true;
    for (const char *s = p + 1; *s; s++) {
        char ch = *s;
        if (ch == '/') {
            if (seg_start)
                return false; /* "//" */
            seg_start = true;
            continue;
        }
        if (seg_start && ch == '.')
            return false; /* ".x", "..", hidden files */
        seg_start = false;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return !seg_start && content_type(p);
}

static enum MHD_Result serve_file(struct api *a, struct req *r, struct MHD_Connection *c,
                                  const char *url)
{
    /* "/" is the page; "/static/<file>" its assets, files of www_dir */
    const char *path = !strcmp(url, "/") ? "/index.html" : url;
    if (!strncmp(path, "/static/", 8))
        path += 7;
    if (!safe_path(path))
        return fail(r, c, 404, "not found");
    char full[PATH_MAX_LEN + 512];
    snprintf(full, sizeof full, "%s%s", a->cfg->api.www_dir, path);
    int fd = open(full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return fail(r, c, 404, "not found");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((size_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type(path));
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    ch_http_security_headers(resp, false);
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- authentication and routing ----------------------------------------------------------- */

/* The bearer token's holder into r->who. Returns 0, or the status after
 * answering. */
static unsigned authenticate(struct api *a, struct req *r, struct MHD_Connection *c,
                             enum MHD_Result *ret)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) || !h[7] || strlen(h) > 256) {
        *ret = fail_hdr(r, c, 401, "WWW-Authenticate", "Bearer realm=\"carehub\"",
                        "a bearer token is required (Authorization: Bearer ...)");
        return 401;
    }
    const char *secret = h + 7;
    while (*secret == ' ')
        secret++;
    pthread_rwlock_rdlock(&a->tokens_lock);
    const struct token *k = tokens_find(a->tokens, secret);
    int retry = 1;
    bool limited = k && !tokens_take(a->tokens, k, ch_mono_ms(), &retry);
    if (k) {
        r->authed = true;
        struct who *w = &r->who;
        ch_strlcpy(w->name, k->name, sizeof w->name);
        w->role = k->role;
        w->all = k->all_sites;
        ch_strlcpy(w->district, k->district ? k->district : "", sizeof w->district);
        w->grants = k->grant_mask;
        w->n_sites = k->sites.n;
        w->sites = ch_xcalloc(k->sites.n + 1, CH_ID_MAX);
        for (size_t i = 0; i < k->sites.n; i++)
            ch_strlcpy(w->sites[i], ((char **)k->sites.items)[i], CH_ID_MAX);
    }
    pthread_rwlock_unlock(&a->tokens_lock);
    if (!k) {
        *ret = fail_hdr(r, c, 401, "WWW-Authenticate",
                        "Bearer realm=\"carehub\", error=\"invalid_token\"",
                        "unknown or revoked token");
        return 401;
    }
    if (limited) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry);
        *ret = fail_hdr(r, c, 429, "Retry-After", ra, "too many requests for this token");
        return 429;
    }
    return 0;
}

static enum MHD_Result route(struct api *a, struct MHD_Connection *c, const char *url,
                             const char *method, struct req *r)
{
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (!strcmp(url, "/healthz")) {
        if (!get)
            return fail_hdr(r, c, 405, "Allow", "GET, HEAD", "method not allowed");
        return reply_json(r, c, 200, json_pack("{s:s}", "status", "ok"));
    }
    if (strncmp(url, "/api/", 5)) {
        if (!get)
            return fail_hdr(r, c, 405, "Allow", "GET, HEAD", "method not allowed");
        return serve_file(a, r, c, url);
    }
    enum {
        R_ME,
        R_SITES,
        R_SITE,
        R_ALARMS,
        R_ACTIVE,
        R_CMD,
        R_EVENTS,
        R_SUMMARY,
        R_SERIES,
        R_EXPORT,
        R_AUDIT
    } which;
    const char *p = url + 4;
    const char *one = NULL;
    bool wants_post = false;
    if (!strcmp(p, "/v1/me"))
        which = R_ME;
    else if (!strcmp(p, "/v1/sites"))
        which = R_SITES;
    else if (!strncmp(p, "/v1/sites/", 10) && !strchr(p + 10, '/'))
        which = R_SITE, one = p + 10;
    else if (!strcmp(p, "/v1/alarms"))
        which = R_ALARMS;
    else if (!strcmp(p, "/v1/alarms/active"))
        which = R_ACTIVE;
    else if (!strcmp(p, "/v1/commands"))
        which = R_CMD, wants_post = true;
    else if (!strcmp(p, "/v1/events"))
        which = R_EVENTS;
    else if (!strcmp(p, "/v1/summary"))
        which = R_SUMMARY;
    else if (!strcmp(p, "/v1/series"))
        which = R_SERIES;
    else if (!strcmp(p, "/v1/export"))
        which = R_EXPORT;
    else if (!strcmp(p, "/v1/audit"))
        which = R_AUDIT;
    else
        return fail(r, c, 404, "no such endpoint");
    if (wants_post && !post)
        return fail_hdr(r, c, 405, "Allow", "POST", "method not allowed");
    if (!wants_post && !get)
        return fail_hdr(r, c, 405, "Allow", "GET, HEAD", "method not allowed");
    enum MHD_Result ret = MHD_NO;
    if (authenticate(a, r, c, &ret))
        return ret;
    if (r->body.too_big)
        return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
    switch (which) {
    case R_ME:
        return h_me(r, c);
    case R_SITES:
        return h_sites(a, r, c, NULL);
    case R_SITE:
        return h_sites(a, r, c, one);
    case R_ALARMS:
        return h_alarms(a, r, c);
    case R_ACTIVE:
        return h_active(a, r, c);
    case R_CMD:
        return h_command(a, r, c);
    case R_EVENTS:
        return h_events(a, r, c);
    case R_SUMMARY:
        return h_summary(a, r, c);
    case R_SERIES:
        return h_series(a, r, c);
    case R_EXPORT:
        return h_export(a, r, c);
    case R_AUDIT:
        return h_audit(a, r, c);
    }
    return fail(r, c, 404, "no such endpoint");
}

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct req *r = cls;
    size_t n = strlen(r->query);
    snprintf(r->query + n, sizeof r->query - n, "%s%s=%s", n ? "&" : "", key, value ? value : "");
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct api *a = cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        r = ch_xcalloc(1, sizeof *r);
        r->start_mono = ch_mono_ms();
        ch_strlcpy(r->method, method, sizeof r->method);
        ch_strlcpy(r->path, url, sizeof r->path);
        ch_http_client_addr(c, r->addr, sizeof r->addr);
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_query, r);
        *con_cls = r;
        if (ch_http_body_declared_too_big(c, &r->body))
            return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!ch_http_body_feed(&r->body, upload, upload_size, BODY_MAX))
            return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
        return MHD_YES;
    }
    return route(a, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    struct api *a = cls;
    (void)c;
    struct req *r = *con_cls;
    if (!r)
        return;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 200)
        r->status = 499; /* the client went away mid-answer (nginx's code) */
    /* static files are not worth an audit entry each; refusals of them are */
    bool api = !strncmp(r->path, "/api/", 5) || r->status >= 400;
    if (api && r->status)
        audit_write(a, r);
    ch_http_body_free(&r->body);
    free(r->who.sites);
    free(r);
    *con_cls = NULL;
}

/* ---- start and stop -------------------------------------------------------------------------- */

/* The privacy rules and compliance limits, from the configuration (whose
 * strings they borrow) or the defaults. */
static void set_policies(struct api *a)
{
    const struct hubcfg_api *ac = &a->cfg->api;
    a->sens = default_sensitive;
    a->n_sens = CH_ARRAY_LEN(default_sensitive);
    if (ac->sensitive.n) {
        struct sensitive_def *v = ch_xcalloc(ac->sensitive.n, sizeof *v);
        for (size_t i = 0; i < ac->sensitive.n; i++) {
            const struct hubcfg_sensitive *h = &((struct hubcfg_sensitive *)ac->sensitive.items)[i];
            v[i] = (struct sensitive_def){h->measurement, (const char *const *)h->metrics.items,
                                          h->metrics.n, (unsigned)h->grant};
        }
        a->sens = v;
        a->n_sens = ac->sensitive.n;
    }
    a->lims = default_limits;
    a->n_lims = CH_ARRAY_LEN(default_limits);
    if (ac->compliance.n) {
        struct limit_def *v = ch_xcalloc(ac->compliance.n, sizeof *v);
        for (size_t i = 0; i < ac->compliance.n; i++) {
            const struct hubcfg_limit *h = &((struct hubcfg_limit *)ac->compliance.items)[i];
            v[i] = (struct limit_def){h->measurement, h->metric, h->min, h->max};
        }
        a->lims = v;
        a->n_lims = ac->compliance.n;
    }
}

static void free_policies(struct api *a)
{
    if (a->sens != default_sensitive)
        free((void *)a->sens);
    if (a->lims != default_limits)
        free((void *)a->lims);
}

/* The regulators' pseudonym key: 32 random bytes as hex in the file, made on
 * first start (mode 0600). Every hub of a deployment must share the file. */
static int load_key(struct api *a, const char *path)
{
    FILE *f = fopen(path, "r");
    char hex[80] = "";
    if (f) {
        if (!fgets(hex, sizeof hex, f))
            hex[0] = '\0';
        fclose(f);
    } else if (errno == ENOENT) {
        char h1[33], h2[33];
        ch_random_hex(h1);
        ch_random_hex(h2);
        snprintf(hex, sizeof hex, "%s%s\n", h1, h2);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, hex, 65) != 65 || fsync(fd)) {
            int e = errno;
            LOGE(MOD, path, "cannot create the pseudonym key: %s", strerror(e));
            if (fd >= 0)
                close(fd);
            return -e;
        }
        close(fd);
        LOGI(MOD, path, "new pseudonym key (give every hub of this deployment the same file)");
    } else {
        int e = errno;
        LOGE(MOD, path, "cannot read the pseudonym key: %s", strerror(e));
        return -e;
    }
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            LOGE(MOD, path, "the pseudonym key must be 64 hex digits");
            return CH_ECONFIG;
        }
        a->pkey[i] = (unsigned char)v;
    }
    return 0;
}

int api_start(const struct hubcfg *cfg, struct presence *view, struct influx *writer,
              struct sub *mqtt, struct api **out)
{
    *out = NULL;
    const struct hubcfg_api *ac = &cfg->api;
    struct api *a = ch_xcalloc(1, sizeof *a);
    a->cfg = cfg;
    a->view = view;
    a->writer = writer;
    a->mqtt = mqtt;
    a->q = (struct influxq){.cfg = &cfg->influx, .timeout_ms = ac->query_timeout_ms};
    set_policies(a);
    int rc = tokens_load(ac->tokens_file, ac->rate_limit, &a->tokens);
    if (!rc)
        rc = load_key(a, ac->pseudonym_key_file);
    struct stat st;
    if (!rc && (stat(ac->www_dir, &st) || !S_ISDIR(st.st_mode))) {
        LOGE(MOD, ac->www_dir, "www_dir: not a directory (the web console's files)");
        rc = CH_ECONFIG;
    }
    if (!rc) {
        a->audit = fopen(ac->audit_log, "ae");
        if (!a->audit) {
            rc = -errno;
            LOGE(MOD, ac->audit_log, "cannot open the audit log: %s", strerror(-rc));
        }
    }
    int fd = -1;
    bool v6 = false;
    if (!rc)
        rc = ch_http_listen(MOD, ac->bind, ac->port, &fd, &a->port, &v6);
    if (rc) {
        tokens_free(a->tokens);
        if (a->audit)
            fclose(a->audit);
        free_policies(a);
        free(a);
        return rc;
    }
    pthread_rwlock_init(&a->tokens_lock, NULL);
    pthread_mutex_init(&a->audit_mu, NULL);
    ch_sse_init(&a->sse, MOD, (size_t)ac->max_clients, KEEPALIVE_MS);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    a->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, ch_http_log, (void *)MOD,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(ac->max_clients + CONN_HEADROOM), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONN_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
        MHD_OPTION_UNESCAPE_CALLBACK, ch_http_unescape, a, MHD_OPTION_END);
    if (!a->d) {
        int e = errno ? errno : EIO;
        LOGE(MOD, NULL, "cannot start the HTTP server: %s", strerror(e));
        close(fd);
        api_stop(a);
        return -e;
    }
    LOGI(MOD, NULL, "serving the API and console on http://%s%s%s:%u/ (%zu tokens)", v6 ? "[" : "",
         ac->bind, v6 ? "]" : "", a->port, a->tokens->list.n);
    *out = a;
    return 0;
}

uint16_t api_port(const struct api *a)
{
    return a ? a->port : 0;
}

int api_reload_tokens(struct api *a)
{
    if (!a)
        return 0;
    struct tokens *t;
    int rc = tokens_load(a->cfg->api.tokens_file, a->cfg->api.rate_limit, &t);
    if (rc) {
        LOGE(MOD, a->cfg->api.tokens_file, "not reloaded: the tokens in use stay");
        return rc;
    }
    pthread_rwlock_wrlock(&a->tokens_lock);
    struct tokens *old = a->tokens;
    a->tokens = t;
    pthread_rwlock_unlock(&a->tokens_lock);
    tokens_free(old);
    LOGI(MOD, a->cfg->api.tokens_file, "reloaded: %zu tokens", t->list.n);
    return 0;
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    ch_sse_stop(&a->sse);
    if (a->d)
        MHD_stop_daemon(a->d);
    ch_sse_destroy(&a->sse);
    tokens_free(a->tokens);
    if (a->audit)
        fclose(a->audit);
    pthread_rwlock_destroy(&a->tokens_lock);
    pthread_mutex_destroy(&a->audit_mu);
    explicit_bzero(a->pkey, sizeof a->pkey);
    free_policies(a);
    LOGI(MOD, NULL, "stopped");
    free(a);
}
