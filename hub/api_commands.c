/* POST /api/v1/commands: an operator's ack, shelve or service change for one
 * alarm, published to its gateway through the view's MQTT client (the
 * gateway applies it and reports the transition). Regulators may not send
 * commands (the route table); only an admin takes alarms out of or back
 * into service. */
#include "api_internal.h"
#include "err.h"
#include "log.h"
#include "presence.h"
#include "subscriber.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

enum MHD_Result h_command(struct api *a, struct req *r, struct MHD_Connection *c)
{
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
    int rc = a->mqtt ? sub_publish(a->mqtt, topic, payload) : CH_ERETRY;
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
