/* GET /api/v1/events: live alarm transitions and site changes as
 * server-sent events, each stream seeing the sites of its token's scope, a
 * regulator's in the regulators' variant (pseudonyms). */
#include "api.h"
#include "api_internal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

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
    char addr[64];
    ch_http_client_addr(c, addr, sizeof addr);
    r->status = 200;
    return ch_sse_open(&a->sse, c, NULL, NULL, w, r->who.name, addr, busy);
}
