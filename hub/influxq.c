#include "influxq.h"
#include "hubcfg.h"
#include "err.h"
#include "util.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESPONSE_MAX (512u * 1024 * 1024) /* a bigger answer is an error, not an OOM */

void qb_init(struct qb *b)
{
    memset(b, 0, sizeof *b);
}

void qb_free(struct qb *b)
{
    free(b->s);
    qb_init(b);
}

static void reserve(struct qb *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->s = ch_xrealloc(b->s, cap);
    b->cap = cap;
}

void qb_add(struct qb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void put(struct qb *b, char c)
{
    reserve(b, 1);
    b->s[b->len++] = c;
    b->s[b->len] = '\0';
}

static void quoted(struct qb *b, const char *v, char q)
{
    put(b, q);
    for (; *v; v++) {
        if (*v == q || *v == '\\')
            put(b, '\\');
        if (*v == '\n' || *v == '\r') /* nothing legitimate has them */
            continue;
        put(b, *v);
    }
    put(b, q);
}

void qb_str(struct qb *b, const char *v)
{
    quoted(b, v, '\'');
}

void qb_ident(struct qb *b, const char *v)
{
    quoted(b, v, '"');
}

bool influx_kept_long(const char *measurement)
{
    static const char *const kept[] = {
        "alarm",          "carehub_audit",        "carehub_device", "carehub_downsample",
        "carehub_rollup", "carehub_rollup_stale", "carehub_status"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        if (!strcmp(measurement, kept[i]))
            return true;
    return false;
}

void qb_readings(struct qb *b, const struct hubcfg_influx *c, const char *measurement)
{
    if (c && c->retention.raw_ms && !(measurement && influx_kept_long(measurement)))
        qb_add(b, "\"%s\".", INFLUX_RP_RAW);
    if (measurement)
        qb_ident(b, measurement);
    else
        qb_add(b, "/.*/");
}

void qb_regex_prefix(struct qb *b, const char *prefix)
{
    put(b, '/');
    put(b, '^');
    for (; *prefix; prefix++) {
        unsigned char c = (unsigned char)*prefix;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            put(b, '\\');
        if (c == '\n' || c == '\r')
            continue;
        put(b, (char)c);
    }
    put(b, '/');
}

void qb_time(struct qb *b, int64_t ms)
{
    qb_add(b, "%lldms", (long long)ms);
}

struct body {
    char *p;
    size_t len;
    bool too_big;
};

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load((const atomic_bool *)ud) ? 1 : 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t len = size * n;
    if (b->len + len > RESPONSE_MAX) {
        b->too_big = true;
        return 0;
    }
    b->p = ch_xrealloc(b->p, b->len + len + 1);
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return len;
}

int influxq_run(const struct influxq *q, const char *query, json_t **results, char *err,
                size_t errn)
{
    *results = NULL;
    const struct hubcfg_influx *c = q->cfg;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errn, "libcurl cannot start");
        return CH_ERETRY;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s/query", c->url);
    char *eq = curl_easy_escape(h, query, 0);
    char *edb = curl_easy_escape(h, c->version == 2 ? c->bucket : c->database, 0);
    size_t n = strlen(eq ? eq : "") + strlen(edb ? edb : "") + 32;
    char *form = ch_xmalloc(n);
    snprintf(form, n, "db=%s&epoch=ms&q=%s", edb ? edb : "", eq ? eq : "");
    curl_free(eq);
    curl_free(edb);
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, "Accept: application/json");
    if (c->version == 2) {
        size_t an = strlen(c->token) + 32;
        char *auth = ch_xmalloc(an);
        snprintf(auth, an, "Authorization: Token %s", c->token);
        hdr = curl_slist_append(hdr, auth);
        free(auth);
    } else if (c->username && c->username[0]) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    struct body b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)q->timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, ""); /* gzip answers when offered */
    if (q->cancel) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)(uintptr_t)q->cancel);
    }
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    free(form);
    int rc = 0;
    json_t *root = NULL;
    if (b.too_big) {
        snprintf(err, errn, "InfluxDB's answer is larger than %u MiB", RESPONSE_MAX >> 20);
        rc = CH_EREJECTED;
    } else if (cc != CURLE_OK) {
        snprintf(err, errn, "InfluxDB cannot be reached: %s", curl_easy_strerror(cc));
        rc = CH_ERETRY;
    } else if (!(root = json_loadb(b.p ? b.p : "", b.len, 0, NULL))) {
        snprintf(err, errn, "InfluxDB answered HTTP %ld without JSON", status);
        rc = status >= 500 ? CH_ERETRY : CH_EREJECTED;
    } else {
        json_t *e = json_object_get(root, "error");
        json_t *res = json_object_get(root, "results");
        if (json_is_string(e) || !json_is_array(res)) {
            snprintf(err, errn, "InfluxDB: %s", json_is_string(e) ? json_string_value(e) : "?");
            rc = status >= 500 ? CH_ERETRY : CH_EREJECTED;
        } else {
            size_t i;
            json_t *st;
            json_array_foreach(res, i, st)
            {
                json_t *se = json_object_get(st, "error");
                /* the writer has not created the database (or the
                 * readings' policy) yet, a new deployment: nothing
                 * stored, not an error */
                if (json_is_string(se) &&
                    (!strncmp(json_string_value(se), "database not found", 18) ||
                     !strncmp(json_string_value(se), "retention policy not found", 26)))
                    continue;
                if (json_is_string(se)) {
                    snprintf(err, errn, "InfluxDB: %s", json_string_value(se));
                    rc = CH_EREJECTED;
                    break;
                }
            }
            if (rc == 0)
                *results = json_incref(res);
        }
    }
    json_decref(root);
    free(b.p);
    return rc;
}

int influxq_run_qb(const struct influxq *q, struct qb *b, json_t **results, char *err, size_t errn)
{
    int rc = influxq_run(q, b->s ? b->s : "", results, err, errn);
    qb_free(b);
    return rc;
}

json_t *influxq_series(json_t *results, size_t i)
{
    json_t *s = json_object_get(json_array_get(results, i), "series");
    return json_is_array(s) ? s : NULL;
}

int influxq_col(json_t *series, const char *name)
{
    json_t *cols = json_object_get(series, "columns");
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c) if (json_is_string(c) &&
                                       !strcmp(json_string_value(c), name)) return (int)i;
    return -1;
}
