/* GET /api/v1/events: live alarm transitions and site changes as
 * server-sent events, each stream seeing the sites of its token's scope, a
 * regulator's in the variant of its grants (privacy: pseudonyms, and the
 * metric, value and message of what its allow-list opens). */
#include "api.h"
#include "api_internal.h"
#include "hubcfg.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRANTS_ALL (GRANT_HEALTH | GRANT_LOCATION)

/* Whom an event is for: the streams of a site, all of them or those of one
 * variant (staff, or regulators with exactly these grants). */
struct audience {
    const char *site;
    bool any;
    const struct who *variant;
};

static bool want_event(const void *ctx, void *arg)
{
    const struct who *w = ctx;
    const struct audience *to = arg;
    if (!in_scope(w, to->site))
        return false;
    if (to->any)
        return true;
    if (is_regulator(w) != is_regulator(to->variant))
        return false;
    return !is_regulator(w) || (w->grants & GRANTS_ALL) == to->variant->grants;
}

void api_alert(struct api *a, const struct ch_alert *t)
{
    if (!a)
        return;
    /* staff, then regulators with each combination of grants */
    for (unsigned v = 0; v <= GRANTS_ALL + 1; v++) {
        struct who w = {.role = v ? ROLE_REGULATOR : ROLE_STAFF, .grants = v ? v - 1 : 0};
        json_t *o = alarm_object(a, t, &w);
        char *data = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!data)
            continue;
        char *ev = ch_sse_format("alarm", data);
        free(data);
        struct audience to = {t->site, false, &w};
        ch_sse_publish(&a->sse, ev, want_event, &to);
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
    struct audience to = {site, true, NULL};
    ch_sse_publish(&a->sse, ev, want_event, &to);
    free(ev);
}

/* The stream's quotas (httpd.h): its token's, and its sites' share, so that
 * neither one token nor one site's tokens take every stream the hub has.
 * A token of listed sites counts against each (the first CH_SSE_KEYS - 1 of
 * them), a district's against the district; an every-site token (the hub's
 * own people) against its own quota only. */
static void stream_quotas(const struct api *a, const struct who *w, struct ch_sse_stream *st)
{
    const struct hubcfg_api *ac = &a->cfg->api;
    int64_t per_token = ac->max_streams_per_token, per_site = ac->max_streams_per_site;
    if (!per_token)
        per_token = ac->max_clients / 16 > 4 ? ac->max_clients / 16 : 4;
    if (!per_site)
        per_site = ac->max_clients / 4 > per_token ? ac->max_clients / 4 : per_token;
    struct ch_sse_quota *q = st->quotas;
    snprintf(q[0].key, sizeof q[0].key, "token %.72s", w->name);
    q[0].max = (size_t)per_token;
    size_t n = 1;
    if (w->district[0] && !w->all)
        snprintf(q[n++].key, sizeof q->key, "district %s", w->district);
    for (size_t i = 0; i < w->n_sites && n < CH_SSE_KEYS && !w->all && !w->district[0]; i++)
        snprintf(q[n++].key, sizeof q->key, "site %s", w->sites[i]);
    for (size_t i = 1; i < n; i++)
        q[i].max = (size_t)per_site;
    st->n_quotas = n;
}

enum MHD_Result h_events(struct api *a, struct req *r, struct MHD_Connection *c)
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
    struct ch_sse_stream st = {.ctx = w, .who = r->who.name, .addr = r->addr};
    stream_quotas(a, &r->who, &st);
    size_t which = 0;
    enum MHD_Result ret;
    switch (ch_sse_start(&a->sse, c, &st, &which, &ret)) {
    case CH_SSE_OPENED:
        r->status = 200;
        return ret;
    case CH_SSE_QUOTA:
        return fail_hdr(r, c, 503, "Retry-After", "5",
                        "%zu live event streams of %s are open already (api.max_streams_per_%s)",
                        st.quotas[which].max, st.quotas[which].key, which ? "site" : "token");
    default:
        return fail_hdr(r, c, 503, "Retry-After", "5", "too many live clients");
    }
}
