/* The API's requests and responses: JSON answers and errors, the query
 * parameters every endpoint shares (dates, ranges, site), the InfluxQL
 * conditions that keep a query in the token's scope, and the cells of
 * InfluxDB's answer rows. See api_internal.h. */
#include "api.h"
#include "api_internal.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_MAX_MS     (400LL * 86400000) /* longest from..to */
#define DEFAULT_RANGE_MS 86400000LL

void note_site(struct req *r, const char *site)
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

enum MHD_Result reply_json(struct req *r, struct MHD_Connection *c, unsigned status, json_t *o)
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

enum MHD_Result fail_hdr(struct req *r, struct MHD_Connection *c, unsigned status, const char *hdr,
                         const char *val, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a message may quote the request ("unknown parameter '%.64s'"): not
       necessarily UTF-8, or cut inside a character */
    ch_utf8_fix(msg);
    json_t *o = json_pack("{s:s,s:s}", "error", error_code(status), "message", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return reply(r, c, status, s, hdr, val);
}

/* An InfluxDB failure as the client sees it. */
enum MHD_Result fail_query(struct req *r, struct MHD_Connection *c, int rc, const char *err)
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
const char *unknown_param(struct MHD_Connection *c, const char *const *allowed)
{
    struct params p = {.allowed = allowed};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_param, &p);
    return p.bad;
}

const char *arg(struct MHD_Connection *c, const char *key)
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
bool time_range(struct req *r, struct MHD_Connection *c, int64_t *from, int64_t *to,
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
bool site_param(struct req *r, struct MHD_Connection *c, bool required, const char **site,
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
void where_sites(struct qb *q, const struct who *w, const char *site)
{
    if (site) {
        qb_add(q, "\"site\" = ");
        qb_str(q, site);
    } else if (w->all) {
        qb_add(q, "\"site\" =~ /./");
    } else if (w->district[0]) {
        /* whole segments, as tokens_district_covers: the district itself, or
         * it and a separator */
        qb_add(q, "(\"site\" = ");
        qb_str(q, w->district);
        for (const char *sep = TOKENS_SEGMENT_SEPARATORS; *sep; sep++) {
            char start[CH_ID_MAX + 2];
            snprintf(start, sizeof start, "%s%c", w->district, *sep);
            qb_add(q, " OR \"site\" =~ ");
            qb_regex_prefix(q, start);
        }
        qb_add(q, ")");
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

void where_time(struct qb *q, int64_t from, int64_t to)
{
    qb_add(q, " AND time >= ");
    qb_time(q, from);
    qb_add(q, " AND time < ");
    qb_time(q, to);
}

/* ---- answer rows ----------------------------------------------------------------------- */

const char *str_at(json_t *row, int i)
{
    json_t *v = i >= 0 ? json_array_get(row, (size_t)i) : NULL;
    return json_is_string(v) ? json_string_value(v) : "";
}

int64_t int_at(json_t *row, int i)
{
    json_t *v = i >= 0 ? json_array_get(row, (size_t)i) : NULL;
    return json_is_number(v) ? (int64_t)json_number_value(v) : 0;
}

json_int_t int_of(json_t *arr, size_t i)
{
    return json_integer_value(json_array_get(arr, i));
}

/* The gateways' own metrics (edge_device, edge_gateway) and the hub's
 * (carehub_*): their readings are not a device's, and an offline device
 * still has its edge_device row every self_metrics_interval. */
bool self_metrics_series(json_t *series)
{
    const char *m = json_string_value(json_object_get(series, "name"));
    return m && (!strncmp(m, "edge_", 5) || !strncmp(m, "carehub_", 8));
}

bool site_range_params(struct req *r, struct MHD_Connection *c, const char *const *allowed,
                       bool site_required, const char **site, int64_t *from, int64_t *to,
                       enum MHD_Result *ret)
{
    const char *bad = unknown_param(c, allowed);
    if (bad) {
        *ret = fail(r, c, 400, "unknown parameter '%.64s'", bad);
        return false;
    }
    return site_param(r, c, site_required, site, ret) && time_range(r, c, from, to, ret);
}
