/* GET /api/v1/sites and /api/v1/sites/{site}: every gateway's status from
 * the hub's view (presence), with the devices online and the active alarms
 * from InfluxDB; and GET /api/v1/me, the token's own name, role and scope. */
#include "api_internal.h"
#include "hubcfg.h"
#include "log.h"
#include "presence.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    qb_add(&q, "SELECT count(\"seq\") FROM ");
    qb_readings(&q, &a->cfg->influx, NULL);
    qb_add(&q, " WHERE ");
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
json_t *sites_json(struct api *a, const struct who *w, const char *site, bool with_influx)
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

enum MHD_Result h_sites(struct api *a, struct req *r, struct MHD_Connection *c, const char *one)
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

/* GET /api/v1/console, no login: what the console's page needs before
 * anyone signs in (its default language, api.locale). */
enum MHD_Result h_console(struct api *a, struct req *r, struct MHD_Connection *c)
{
    return reply_json(
        r, c, 200,
        json_pack("{s:s}", "locale", cfg_enum_name(console_locales, a->cfg->api.locale)));
}

enum MHD_Result h_me(struct api *a, struct req *r, struct MHD_Connection *c)
{
    (void)a;
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
    /* a user's name without its "user:"; kind and display for users only (a
       token's /me is as it always was) */
    const char *name = w->user ? w->name + strlen(USER_PREFIX) : w->name;
    json_t *o =
        json_pack("{s:s,s:s,s:o,s:o,s:o}", "name", name, "role", token_role_name(w->role), "sites",
                  w->district[0] ? (json_decref(sites), json_null()) : sites, "district",
                  w->district[0] ? json_string(w->district) : json_null(), "grants", grants);
    if (w->user) {
        json_object_set_new(o, "kind", json_string("user"));
        json_object_set_new(o, "display", w->display[0] ? json_string(w->display) : json_null());
    }
    return reply_json(r, c, 200, o);
}
