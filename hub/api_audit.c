/* The audit trail: every request, refused ones too, once finished, as one
 * JSON line in api.audit_log and one carehub_audit point through the hub's
 * spool; and GET /api/v1/audit, which admins read from any hub. */
#include "api_internal.h"
#include "config.h"
#include "influx.h"
#include "lineproto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void audit_write(struct api *a, struct req *r)
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

enum MHD_Result h_audit(struct api *a, struct req *r, struct MHD_Connection *c)
{
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
