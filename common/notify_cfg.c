/* The notify: section (notify.h describes it). The tables below parse what
 * has a fixed shape; the free-form parts (the rosters' mapping of ids,
 * levels as lists of lists, headers) come as CFG_NODE and are walked here.
 * Every problem is reported (file:line:column and key) before failing. */
#include "err.h"
#include "log.h"
#include "notify_int.h"
#include "util.h"

#include <curl/curl.h>
#include <libfyaml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CH(k) offsetof(struct notify_channel, k)
#define RT(k) offsetof(struct notify_route, k)
#define RE(k) offsetof(struct notify_retry, k)
#define WN(k) offsetof(struct notify_window, k)
#define NC(k) offsetof(struct notify_cfg, k)

/* clang-format off */
static const struct cfg_key channel_keys[] = {
    {.key = "id",           .type = CFG_ID,       .offset = CH(id), .required = true},
    {.key = "name",         .type = CFG_STR,      .offset = CH(name)},
    {.key = "type",         .type = CFG_STR,      .offset = CH(type), .required = true},
    {.key = "url",          .type = CFG_STR,      .offset = CH(url), .required = true},
    {.key = "secret",       .type = CFG_STR,      .offset = CH(secret)},
    {.key = "sign",         .type = CFG_BOOL,     .offset = CH(sign), .def = "true"},
    {.key = "mention",      .type = CFG_STRLIST,  .offset = CH(mention)},
    {.key = "to",           .type = CFG_STRLIST,  .offset = CH(to)},
    {.key = "rate",         .type = CFG_INT,      .offset = CH(rate), .min = 0, .max = 6000},
    {.key = "headers",      .type = CFG_NODE,     .offset = CH(headers)},
    {.key = "template",     .type = CFG_STR,      .offset = CH(tmpl)},
    {.key = "content_type", .type = CFG_STR,      .offset = CH(content_type)},
    {.key = "locale",       .type = CFG_STR,      .offset = CH(locale), .def = "zh"},
    CFG_END,
};

static const struct cfg_key window_keys[] = {
    {.key = "time",     .type = CFG_STR,     .offset = WN(time), .required = true},
    {.key = "channels", .type = CFG_STRLIST, .offset = WN(channels), .required = true},
    CFG_END,
};

static const struct cfg_key route_keys[] = {
    {.key = "priorities", .type = CFG_STRLIST, .offset = RT(priorities)},
    {.key = "levels",     .type = CFG_NODE,    .offset = RT(levels), .required = true},
    {.key = "events",     .type = CFG_STRLIST, .offset = RT(events)},
    CFG_END,
};

static const struct cfg_key retry_keys[] = {
    {.key = "first",   .type = CFG_DURATION, .offset = RE(first_ms), .def = "2s", .min = 100, .max = 3600000},
    {.key = "max",     .type = CFG_DURATION, .offset = RE(max_ms), .def = "5m", .min = 100, .max = 86400000},
    {.key = "give_up", .type = CFG_DURATION, .offset = RE(give_up_ms), .def = "1h", .min = 1000, .max = 7 * 86400000.0},
    CFG_END,
};

static const struct cfg_key notify_keys[] = {
    {.key = "channels", .type = CFG_LIST, .offset = NC(channels), .required = true, .sub = channel_keys,
     .elem_size = sizeof(struct notify_channel), .node_offset = CH(node)},
    {.key = "rosters",  .type = CFG_NODE, .offset = NC(rosters_node)},
    {.key = "routes",   .type = CFG_LIST, .offset = NC(routes), .required = true, .sub = route_keys,
     .elem_size = sizeof(struct notify_route), .node_offset = RT(node)},
    {.key = "retry",    .type = CFG_MAP,  .offset = NC(retry), .sub = retry_keys},
    {.key = "queue",    .type = CFG_INT,  .offset = NC(queue), .def = "1000", .min = 10, .max = 100000},
    CFG_END,
};
/* clang-format on */

static const struct cfg_enum prio_names[] = {{"low", 0}, {"medium", 1}, {"high", 2}, {NULL, 0}};
static const struct cfg_enum event_names[] = {{"raise", NOTIFY_RAISE},
                                              {"escalate", NOTIFY_ESCALATE},
                                              {"ack", NOTIFY_ACK},
                                              {"clear", NOTIFY_CLEAR},
                                              {NULL, 0}};

const char *notify_event_name(int event)
{
    return cfg_enum_name(event_names, event);
}

const char *notify_prio_name(int prio)
{
    return cfg_enum_name(prio_names, prio);
}

long notify_chan_find(const struct notify_cfg *c, const char *id)
{
    for (size_t i = 0; i < c->channels.n; i++)
        if (notify_chan(c, i)->id && strcmp(notify_chan(c, i)->id, id) == 0)
            return (long)i;
    return -1;
}

static long roster_find(const struct notify_cfg *c, const char *id)
{
    for (size_t i = 0; i < c->nrosters; i++)
        if (strcmp(c->rosters[i].id, id) == 0)
            return (long)i;
    return -1;
}

static int enum_of(const struct cfg_enum *e, const char *s)
{
    for (; e->name; e++)
        if (strcmp(e->name, s) == 0)
            return e->value;
    return -1;
}

/* The n-th item node of a sequence value of key in map (for reports). */
static struct fy_node *seq_item(struct fy_node *map, const char *key, size_t i)
{
    struct fy_node *seq = map ? fy_node_mapping_lookup_by_string(map, key, FY_NT) : NULL;
    if (!seq || !fy_node_is_sequence(seq))
        return seq ? seq : map;
    struct fy_node *it = fy_node_sequence_get_by_index(seq, (int)i);
    return it ? it : seq;
}

static bool url_ok(const char *url, char *why, size_t n)
{
    CURLU *u = curl_url();
    bool ok = false;
    char *scheme = NULL, *host = NULL;
    if (!u)
        abort();
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        snprintf(why, n, "is not a URL");
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        snprintf(why, n, "is not an http or https URL");
    } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
        snprintf(why, n, "names no host");
    } else if (strpbrk(url, " \t\r\n")) {
        snprintf(why, n, "holds white space");
    } else {
        ok = true;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/* A header name: an HTTP token; a value: no control characters. */
static bool header_ok(const char *name, const char *value)
{
    if (!*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!(((unsigned char)*p > 32 && *p < 127) && !strchr("()<>@,;:\\\"/[]?={}", *p)))
            return false;
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 32 && *p != '\t')
            return false;
    return true;
}

static int check_headers(struct notify_channel *ch)
{
    struct fy_node *h = ch->headers;
    ch->headers = NULL;
    if (!h)
        return 0;
    if (!fy_node_is_mapping(h)) {
        cfg_report(ch->node, "headers", "key 'headers': expected a mapping of names to values");
        return 1;
    }
    int errors = 0;
    int cnt = fy_node_mapping_item_count(h);
    ch->hdrs = ch_xcalloc((size_t)(cnt > 0 ? cnt : 1), sizeof(char *));
    void *it = NULL;
    struct fy_node_pair *p;
    while ((p = fy_node_mapping_iterate(h, &it)) != NULL) {
        struct fy_node *kn = fy_node_pair_key(p), *vn = fy_node_pair_value(p);
        const char *k = kn && fy_node_is_scalar(kn) ? fy_node_get_scalar0(kn) : NULL;
        const char *v = vn && fy_node_is_scalar(vn) ? fy_node_get_scalar0(vn) : NULL;
        if (!k || !v || !header_ok(k, v)) {
            cfg_report(kn ? kn : h, NULL,
                       "key 'headers': each entry is a header name and a text value");
            errors++;
            continue;
        }
        size_t len = strlen(k) + strlen(v) + 3;
        char *line = ch_xmalloc(len);
        snprintf(line, len, "%s: %s", k, v);
        ch->hdrs[ch->nhdrs++] = line;
    }
    return errors;
}

static int check_channel(struct notify_cfg *c, size_t i)
{
    struct notify_channel *ch = notify_chan(c, i);
    int errors = check_headers(ch);
    char why[96];
    if (!ch->id)
        return errors + 1; /* reported by the table */
    for (size_t j = 0; j < i; j++)
        if (notify_chan(c, j)->id && strcmp(notify_chan(c, j)->id, ch->id) == 0) {
            cfg_report(ch->node, "id", "key 'id': channel '%s' is defined twice", ch->id);
            errors++;
        }
    if (!ch->name)
        ch->name = ch_xstrdup(ch->id);
    if (ch->type) {
        ch->t = notify_type_find(ch->type);
        if (!ch->t) {
            cfg_report(ch->node, "type",
                       "key 'type': '%s' is not one of: webhook wecom dingtalk feishu sms",
                       ch->type);
            errors++;
        }
    }
    if (ch->url && !url_ok(ch->url, why, sizeof why)) {
        cfg_report(ch->node, "url", "key 'url': '%s' %s", ch->url, why);
        errors++;
    }
    if (ch->locale && strcmp(ch->locale, "zh") != 0 && strcmp(ch->locale, "zh-CN") != 0 &&
        strcmp(ch->locale, "en") != 0) {
        cfg_report(ch->node, "locale", "key 'locale': '%s' is not one of: zh en", ch->locale);
        errors++;
    }
    if (!ch->t)
        return errors + (ch->type ? 0 : 1);
    if (ch->t->sign && ch->sign && (!ch->secret || !*ch->secret)) {
        cfg_report(ch->node, "type",
                   "key 'secret': channel '%s' (%s) signs its requests: give its secret (加签), "
                   "or sign: false",
                   ch->id, ch->t->name);
        errors++;
    }
    if (!ch->t->sign && ch->secret) {
        cfg_report(ch->node, "secret", "key 'secret': a %s channel takes no secret", ch->t->name);
        errors++;
    }
    static const char *const tkeys[] = {"template", "content_type", "to"};
    for (size_t k = 0; !ch->t->templated && k < CH_ARRAY_LEN(tkeys); k++)
        if (fy_node_mapping_lookup_by_string(ch->node, tkeys[k], FY_NT)) {
            cfg_report(ch->node, tkeys[k],
                       "key '%s': only sms and webhook channels take it (the %s body is fixed)",
                       tkeys[k], ch->t->name);
            errors++;
        }
    if (ch->content_type &&
        (strlen(ch->content_type) > 128 || !header_ok("Content-Type", ch->content_type))) {
        cfg_report(ch->node, "content_type",
                   "key 'content_type': a media type of at most 128 characters without control "
                   "characters (it is sent as a header)");
        errors++;
    }
    if (!fy_node_mapping_lookup_by_string(ch->node, "rate", FY_NT))
        ch->rate = ch->t->rate;
    if (!ch->tmpl && ch->t->deftmpl)
        ch->tmpl = ch_xstrdup(ch->t->deftmpl);
    if (ch->tmpl) {
        char buf[64];
        const char *bad = notify_template_unknown(ch->tmpl, buf, sizeof buf);
        if (bad) {
            cfg_report(ch->node, "template",
                       "key 'template': unknown placeholder {%s} (known: {site} {site_name} "
                       "{title} {kind} {where} {who} {device} {message} {priority} {level} "
                       "{time} {to} {alarm_id} {event} {text})",
                       bad);
            errors++;
        }
        const char *p = ch->tmpl + strspn(ch->tmpl, " \t\r\n");
        ch->json =
            ch->content_type ? strstr(ch->content_type, "json") != NULL : (*p == '{' || *p == '[');
    }
    return errors;
}

/* "HH:MM" into minutes of the day; "24:00" only as an end. */
static bool parse_hm(const char *s, bool end, int *out)
{
    if (strlen(s) != 5 || s[2] != ':')
        return false;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return false;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && (m != 0 || !end)))
        return false;
    *out = h * 60 + m;
    return true;
}

static int check_window(struct notify_cfg *c, struct notify_window *w, struct fy_node *node)
{
    int errors = 0;
    if (w->time) {
        char a[8], b[8];
        const char *dash = strchr(w->time, '-');
        bool ok = dash && dash - w->time == 5 && strlen(dash + 1) == 5;
        if (ok) {
            memcpy(a, w->time, 5);
            a[5] = '\0';
            memcpy(b, dash + 1, 6);
            ok = parse_hm(a, false, &w->start) && parse_hm(b, true, &w->end) && w->start != w->end;
        }
        if (!ok) {
            cfg_report(node, "time",
                       "key 'time': '%s' is not a window of the day \"HH:MM-HH:MM\" (00:00 to "
                       "24:00, start and end differ; \"19:00-07:00\" crosses midnight)",
                       w->time);
            errors++;
        }
    }
    w->chan = ch_xcalloc(w->channels.n ? w->channels.n : 1, sizeof(size_t));
    for (size_t i = 0; i < w->channels.n; i++) {
        const char *id = ((char **)w->channels.items)[i];
        long ci = notify_chan_find(c, id);
        if (ci < 0) {
            cfg_report(seq_item(node, "channels", i), NULL,
                       "key 'channels': no channel has the id '%s'", id);
            errors++;
            continue;
        }
        w->chan[i] = (size_t)ci;
    }
    return errors;
}

static int parse_rosters(struct notify_cfg *c)
{
    struct fy_node *rn = c->rosters_node;
    c->rosters_node = NULL;
    if (!rn)
        return 0;
    if (!fy_node_is_mapping(rn)) {
        cfg_report(rn, NULL, "key 'rosters': expected a mapping of roster ids to lists of windows");
        return 1;
    }
    int errors = 0, cnt = fy_node_mapping_item_count(rn);
    c->rosters = ch_xcalloc((size_t)(cnt > 0 ? cnt : 1), sizeof *c->rosters);
    void *it = NULL;
    struct fy_node_pair *p;
    while ((p = fy_node_mapping_iterate(rn, &it)) != NULL) {
        struct fy_node *kn = fy_node_pair_key(p), *vn = fy_node_pair_value(p);
        const char *id = kn && fy_node_is_scalar(kn) ? fy_node_get_scalar0(kn) : NULL;
        if (!id || !ch_valid_id(id)) {
            cfg_report(kn ? kn : rn, NULL, "key 'rosters': '%s' is not an identifier",
                       id ? id : "?");
            errors++;
            continue;
        }
        if (notify_chan_find(c, id) >= 0) {
            cfg_report(kn, NULL, "key 'rosters': '%s' is already a channel's id", id);
            errors++;
        }
        if (!vn || !fy_node_is_sequence(vn)) {
            cfg_report(vn ? vn : kn, NULL, "key '%s': expected a list of {time, channels}", id);
            errors++;
            continue;
        }
        struct notify_roster *r = &c->rosters[c->nrosters++];
        r->id = ch_xstrdup(id);
        int nw = fy_node_sequence_item_count(vn);
        r->w = ch_xcalloc((size_t)(nw > 0 ? nw : 1), sizeof *r->w);
        void *wit = NULL;
        struct fy_node *wn;
        while ((wn = fy_node_sequence_iterate(vn, &wit)) != NULL) {
            struct notify_window *w = &r->w[r->n++];
            if (cfg_parse_node(wn, window_keys, w) != 0)
                errors++;
            errors += check_window(c, w, wn);
        }
    }
    return errors;
}

static int parse_level(struct notify_cfg *c, struct notify_level *lv, struct fy_node *ln)
{
    /* [] is nobody here: the other side (gateway or hub) tells that level */
    if (!fy_node_is_sequence(ln)) {
        cfg_report(ln, NULL,
                   "key 'levels': each level is a list of roster or channel ids, e.g. "
                   "[on-duty] ([] for nobody)");
        return 1;
    }
    int errors = 0;
    int count = fy_node_sequence_item_count(ln);
    lv->t = ch_xcalloc((size_t)(count > 0 ? count : 1), sizeof *lv->t);
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(ln, &it)) != NULL) {
        const char *id = fy_node_is_scalar(item) ? fy_node_get_scalar0(item) : NULL;
        long ci = id ? notify_chan_find(c, id) : -1, ri = id ? roster_find(c, id) : -1;
        if (ci < 0 && ri < 0) {
            cfg_report(item, NULL, "key 'levels': no roster or channel has the id '%s'",
                       id ? id : "?");
            errors++;
            continue;
        }
        lv->t[lv->n++] =
            (struct notify_target){.roster = ri >= 0, .idx = (size_t)(ri >= 0 ? ri : ci)};
    }
    return errors;
}

static int check_route(struct notify_cfg *c, struct notify_route *r)
{
    int errors = 0;
    for (size_t i = 0; i < r->priorities.n; i++) {
        int p = enum_of(prio_names, ((char **)r->priorities.items)[i]);
        if (p < 0) {
            cfg_report(seq_item(r->node, "priorities", i), NULL,
                       "key 'priorities': '%s' is not one of: high medium low",
                       ((char **)r->priorities.items)[i]);
            errors++;
            continue;
        }
        r->prio_mask |= 1u << p;
    }
    if (!r->priorities.n)
        r->prio_mask = 7;
    for (size_t i = 0; i < r->events.n; i++) {
        int e = enum_of(event_names, ((char **)r->events.items)[i]);
        if (e < 0) {
            cfg_report(seq_item(r->node, "events", i), NULL,
                       "key 'events': '%s' is not one of: raise escalate ack clear",
                       ((char **)r->events.items)[i]);
            errors++;
            continue;
        }
        r->event_mask |= 1u << e;
    }
    if (!r->events.n)
        r->event_mask = 1u << NOTIFY_RAISE | 1u << NOTIFY_ESCALATE;
    struct fy_node *ln = r->levels;
    r->levels = NULL;
    if (!ln)
        return errors;
    if (!fy_node_is_sequence(ln) || fy_node_sequence_item_count(ln) == 0) {
        cfg_report(r->node, "levels",
                   "key 'levels': expected a list of levels, e.g. "
                   "[[on-duty], [nurse-sms]]");
        return errors + 1;
    }
    r->lv = ch_xcalloc((size_t)fy_node_sequence_item_count(ln), sizeof *r->lv);
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(ln, &it)) != NULL)
        errors += parse_level(c, &r->lv[r->nlv++], item);
    return errors;
}

int notify_cfg_parse(struct fy_node *node, struct notify_cfg **out)
{
    struct notify_cfg *c = ch_xcalloc(1, sizeof *c);
    int errors = cfg_parse_node(node, notify_keys, c) != 0;
    for (size_t i = 0; i < c->channels.n; i++)
        errors += check_channel(c, i);
    errors += parse_rosters(c);
    for (size_t i = 0; i < c->routes.n; i++)
        errors += check_route(c, &((struct notify_route *)c->routes.items)[i]);
    if (c->retry.max_ms && c->retry.max_ms < c->retry.first_ms) {
        cfg_report(node, "retry", "key 'retry': max is shorter than first");
        errors++;
    }
    if (errors) {
        notify_cfg_free(c);
        return CH_ECONFIG;
    }
    for (size_t i = 0; i < c->channels.n; i++) /* the document may go now */
        notify_chan(c, i)->node = NULL;
    for (size_t i = 0; i < c->routes.n; i++)
        ((struct notify_route *)c->routes.items)[i].node = NULL;
    *out = c;
    return 0;
}

void notify_cfg_free(struct notify_cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->channels.n; i++) {
        struct notify_channel *ch = notify_chan(c, i);
        for (size_t j = 0; j < ch->nhdrs; j++)
            free(ch->hdrs[j]);
        free(ch->hdrs);
    }
    for (size_t i = 0; i < c->routes.n; i++) {
        struct notify_route *r = &((struct notify_route *)c->routes.items)[i];
        for (size_t j = 0; j < r->nlv; j++)
            free(r->lv[j].t);
        free(r->lv);
    }
    for (size_t i = 0; i < c->nrosters; i++) {
        for (size_t j = 0; j < c->rosters[i].n; j++) {
            cfg_free(window_keys, &c->rosters[i].w[j]);
            free(c->rosters[i].w[j].chan);
        }
        free(c->rosters[i].w);
        free(c->rosters[i].id);
    }
    free(c->rosters);
    cfg_free(notify_keys, c);
    free(c);
}

/* ---- routing (pure) ------------------------------------------------------ */

const struct notify_route *notify_route_for(const struct notify_cfg *c, int priority)
{
    for (size_t i = 0; i < c->routes.n; i++) {
        const struct notify_route *r = &((const struct notify_route *)c->routes.items)[i];
        if (priority >= 0 && priority < 3 && (r->prio_mask & (1u << priority)))
            return r;
    }
    return NULL;
}

static bool window_has(const struct notify_window *w, int minute)
{
    if (w->start < w->end)
        return minute >= w->start && minute < w->end;
    return minute >= w->start || minute < w->end; /* crosses midnight */
}

static size_t add_chan(size_t *chans, size_t n, size_t max, size_t ci)
{
    for (size_t i = 0; i < n; i++)
        if (chans[i] == ci)
            return n;
    if (n < max)
        chans[n++] = ci;
    return n;
}

size_t notify_level_channels(const struct notify_cfg *c, const struct notify_level *lv,
                             int minute_of_day, size_t *chans, size_t n, size_t max)
{
    for (size_t i = 0; i < lv->n; i++) {
        if (!lv->t[i].roster) {
            n = add_chan(chans, n, max, lv->t[i].idx);
            continue;
        }
        const struct notify_roster *r = &c->rosters[lv->t[i].idx];
        for (size_t j = 0; j < r->n; j++)
            if (window_has(&r->w[j], minute_of_day))
                for (size_t k = 0; k < r->w[j].channels.n; k++)
                    n = add_chan(chans, n, max, r->w[j].chan[k]);
    }
    return n;
}

size_t notify_targets(const struct notify_cfg *cfg, int priority, int level, int minute_of_day,
                      const char **ids, size_t max)
{
    const struct notify_route *r = notify_route_for(cfg, priority);
    if (!r || !r->nlv)
        return 0;
    size_t li = level < 0 ? 0 : (size_t)level >= r->nlv ? r->nlv - 1 : (size_t)level;
    size_t chans[64];
    size_t n = notify_level_channels(cfg, &r->lv[li], minute_of_day, chans, 0, CH_ARRAY_LEN(chans));
    size_t out = 0;
    for (size_t i = 0; i < n && out < max; i++)
        ids[out++] = notify_chan(cfg, chans[i])->id;
    return out;
}
