/* What the notifier says and how each channel type says it: the message
 * text (one builder, a table per locale), templates, the robots'
 * signatures and request bodies, and how their answers say "delivered".
 *
 * Sources relied on (vendor documentation and its published examples):
 * - WeCom group robot (企业微信 群机器人, developer.work.weixin.qq.com
 *   document/path/91770): POST JSON {"msgtype":"text","text":{"content":
 *   ..., "mentioned_mobile_list":[...]}}, content at most 2048 bytes,
 *   answer {"errcode":0,"errmsg":"ok"}; 20 messages a minute per robot.
 * - DingTalk custom robot (钉钉 自定义机器人 加签, open.dingtalk.com; the
 *   Python sample it publishes): timestamp in ms, string_to_sign =
 *   timestamp "\n" secret, sign = quote_plus(base64(HMAC-SHA256(key secret,
 *   msg string_to_sign))), added as &timestamp=..&sign=.. to the webhook;
 *   body {"msgtype":"text","text":{"content":..},"at":{"atMobiles":[..],
 *   "isAtAll":false}} where a mentioned number also appears as @number in
 *   the content; answer {"errcode":0}; 20 messages a minute.
 * - Feishu custom bot (飞书 自定义机器人 签名校验, open.feishu.cn; its Python
 *   sample): timestamp in s, key = timestamp "\n" secret, sign =
 *   base64(HMAC-SHA256(key, msg "")), sent in the body with
 *   {"msg_type":"text","content":{"text":..}}; answer {"code":0} (older
 *   deployments {"StatusCode":0}); the timestamp must be within an hour;
 *   100 messages a minute. */
#include "codec.h"
#include "err.h"
#include "notify_int.h"
#include "util.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ---------------------------------------------------------- */

/* Escapes s for the inside of a JSON string (RFC 8259 section 7): quote,
 * backslash and control characters; other UTF-8 is copied as it is. */
void notify_buf_json(struct ch_buf *b, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        switch (c) {
        case '"':
            ch_buf_add(b, "\\\"", 2);
            break;
        case '\\':
            ch_buf_add(b, "\\\\", 2);
            break;
        case '\n':
            ch_buf_add(b, "\\n", 2);
            break;
        case '\r':
            ch_buf_add(b, "\\r", 2);
            break;
        case '\t':
            ch_buf_add(b, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                ch_buf_add(b, esc, 6);
            } else {
                ch_buf_add(b, p, 1);
            }
        }
    }
}

void notify_req_free(struct notify_req *r)
{
    free(r->url);
    free(r->body);
    free(r->content_type);
    memset(r, 0, sizeof *r);
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ---- the message text ------------------------------------------------- */

struct locale_text {
    const char *name;
    const char *prio[3];  /* low, medium, high */
    const char *since[2]; /* around the raise's time of day */
    const char *level[2]; /* around the escalation level */
    const char *ack, *by, *clear;
};

static const struct locale_text locales[] = {
    {"zh",
     {"【提示】", "【重要】", "【紧急】"},
     {"", " 起"},
     {"第", "次升级"},
     "已确认 ",
     "确认人 ",
     "已恢复 "},
    {"en",
     {"[Notice] ", "[Important] ", "[URGENT] "},
     {"since ", ""},
     {"escalation ", ""},
     "Acknowledged: ",
     "by ",
     "Cleared: "},
};

static void add_part(struct ch_buf *b, const char *s, bool *first)
{
    if (!s || !*s)
        return;
    if (!*first)
        ch_buf_str(b, " · ");
    ch_buf_str(b, s);
    *first = false;
}

/* The kinds of alert.schema.json with their zh-CN and en titles (the
 * consoles' hub/www/kinds.js says the same). */
static const char *const kind_titles[][3] = {
    {"other", "报警", "Alarm"},
    {"sos", "紧急呼叫", "SOS call"},
    {"fall", "跌倒", "Fall"},
    {"call", "呼叫", "Nurse call"},
    {"wandering", "防走失", "Wandering"},
    {"bed_exit", "离床", "Out of bed"},
    {"vital_signs", "生命体征异常", "Vital signs"},
    {"inactivity", "长时间未活动", "No movement"},
    {"device_battery", "电量低", "Low battery"},
    {"device_offline", "设备离线", "Device offline"},
    {"air_quality", "空气质量", "Air quality"},
    {"gas", "燃气泄漏", "Gas"},
    {"smoke", "烟雾", "Smoke"},
    {"temperature", "温度异常", "Temperature"},
    {"gateway", "网关故障", "Gateway fault"},
};

const char *notify_kind_title(const char *kind, const char *locale)
{
    int col = locale && !strncmp(locale, "en", 2) ? 2 : 1;
    for (size_t i = 0; kind && i < sizeof kind_titles / sizeof kind_titles[0]; i++)
        if (!strcmp(kind_titles[i][0], kind))
            return kind_titles[i][col];
    return kind_titles[0][col];
}

bool notify_event_of_alert(const struct ch_alert *t, struct notify_event *ne, char *where, size_t n)
{
    int ev = t->event == CH_AE_RAISE      ? NOTIFY_RAISE
             : t->event == CH_AE_ESCALATE ? NOTIFY_ESCALATE
             : t->event == CH_AE_ACK      ? NOTIFY_ACK
             : t->event == CH_AE_CLEAR    ? NOTIFY_CLEAR
                                          : -1;
    if (ev < 0 || !t->raised_ms)
        return false;
    const char *room = t->room_name[0] ? t->room_name : t->room;
    /* a wearable located in a zone is there, not in its bed */
    const char *bed = t->located_ms ? "" : t->bed_name[0] ? t->bed_name : t->bed;
    snprintf(where, n, "%s%s%s", room, room[0] && bed[0] ? " " : "", bed);
    *ne = (struct notify_event){
        .site = t->site,
        .site_name = t->site_name[0] ? t->site_name : t->site,
        .gateway = t->gateway,
        .alarm_id = t->alarm_id,
        .rule = t->rule,
        .kind = t->kind[0] ? t->kind : "other",
        .title = NULL, /* the channel's locale's (notify_kind_title) */
        .where = where,
        .who = t->resident_name[0] ? t->resident_name : t->resident,
        .device = t->device_name[0] ? t->device_name : t->device,
        .message = t->message,
        .by = t->by,
        .priority = t->priority,
        .level = ev == NOTIFY_RAISE ? 0 : t->escalation,
        .event = ev,
        .raised_ms = t->raised_ms,
        .ts_ms = t->ts_ms,
    };
    return true;
}

void notify_outcome(const struct notify_result *r, const char *locale, char *out, size_t n)
{
    static const char *const types[][3] = {{"wecom", "企业微信", "WeCom"},
                                           {"dingtalk", "钉钉", "DingTalk"},
                                           {"feishu", "飞书", "Feishu"},
                                           {"sms", "短信", "SMS"},
                                           {"webhook", "Webhook", "Webhook"}};
    int col = locale && !strncmp(locale, "en", 2) ? 2 : 1;
    const char *type = r->type ? r->type : "";
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i][0], type))
            type = types[i][col];
    char to[32] = "";
    size_t tl = r->to ? strlen(r->to) : 0;
    if (tl >= 7) /* a phone number: its middle hidden, as Chinese apps show one */
        snprintf(to, sizeof to, " %.3s****%s", r->to, r->to + tl - 4);
    else if (tl)
        snprintf(to, sizeof to, " %s", r->to);
    snprintf(out, n, "%s%s %s", type, to, r->detail ? r->detail : (r->ok ? "ok" : "?"));
}

char *notify_text(const struct notify_event *ev, const char *locale, const char *raise_hms)
{
    const struct locale_text *L = &locales[0];
    if (locale && strcmp(locale, "en") == 0)
        L = &locales[1];
    struct ch_buf b = {0};
    char tmp[64];
    bool first = true;
    const char *title = ev->title && *ev->title ? ev->title : notify_kind_title(ev->kind, locale);
    if (ev->event == NOTIFY_ACK)
        ch_buf_str(&b, L->ack);
    else if (ev->event == NOTIFY_CLEAR)
        ch_buf_str(&b, L->clear);
    else
        ch_buf_str(&b, L->prio[ev->priority < 0 ? 0 : ev->priority > 2 ? 2 : ev->priority]);
    add_part(&b, title, &first);
    add_part(&b, ev->where, &first);
    add_part(&b, ev->who, &first);
    if ((!ev->where || !*ev->where) && (!ev->who || !*ev->who))
        add_part(&b, ev->device, &first);
    if (ev->event == NOTIFY_ACK) {
        if (ev->by && *ev->by) {
            ch_buf_str(&b, " · ");
            ch_buf_str(&b, L->by);
            ch_buf_str(&b, ev->by);
        }
        return ch_buf_take(&b);
    }
    if (ev->event == NOTIFY_CLEAR)
        return ch_buf_take(&b);
    ch_buf_str(&b, "\n");
    ch_buf_str(&b, L->since[0]);
    ch_buf_str(&b, nz(raise_hms));
    ch_buf_str(&b, L->since[1]);
    if (ev->level > 0) {
        snprintf(tmp, sizeof tmp, "%d", ev->level);
        ch_buf_str(&b, " · ");
        ch_buf_str(&b, L->level[0]);
        ch_buf_str(&b, tmp);
        ch_buf_str(&b, L->level[1]);
    }
    if (ev->message && *ev->message) {
        ch_buf_str(&b, "\n");
        ch_buf_str(&b, ev->message);
    }
    return ch_buf_take(&b);
}

/* ---- templates -------------------------------------------------------- */

static const char *const placeholders[] = {
    "site",     "site_name", "title", "kind", "where", "who",      "device", "message",
    "priority", "level",     "time",  "to",   "text",  "alarm_id", "event",
};

/* The length of a placeholder name at p ([a-z_]+ then '}'), or 0. */
static size_t ph_len(const char *p)
{
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || p[n] == '_')
        n++;
    return n && p[n] == '}' ? n : 0;
}

static int ph_index(const char *p, size_t n)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(placeholders); i++)
        if (strlen(placeholders[i]) == n && memcmp(placeholders[i], p, n) == 0)
            return (int)i;
    return -1;
}

const char *notify_template_unknown(const char *tmpl, char *buf, size_t n)
{
    for (const char *p = tmpl; (p = strchr(p, '{')) != NULL; p++) {
        size_t l = ph_len(p + 1);
        if (l && ph_index(p + 1, l) < 0) {
            snprintf(buf, n, "%.*s", (int)l, p + 1);
            return buf;
        }
    }
    return NULL;
}

char *notify_template_fill(const char *tmpl, bool json, const struct notify_event *ev,
                           const char *to, const char *text, const char *raise_hms)
{
    struct ch_buf b = {0};
    char level[16];
    snprintf(level, sizeof level, "%d", ev->level);
    const char *title = ev->title && *ev->title ? ev->title : nz(ev->kind);
    const char *values[] = {
        ev->site,   ev->site_name, title,
        ev->kind,   ev->where,     ev->who,
        ev->device, ev->message,   notify_prio_name(ev->priority),
        level,      raise_hms,     to,
        text,       ev->alarm_id,  notify_event_name(ev->event),
    };
    _Static_assert(CH_ARRAY_LEN(values) == CH_ARRAY_LEN(placeholders), "one value a name");
    const char *p = tmpl;
    while (*p) {
        const char *open = strchr(p, '{');
        if (!open) {
            ch_buf_str(&b, p);
            break;
        }
        ch_buf_add(&b, p, (size_t)(open - p));
        size_t l = ph_len(open + 1);
        int i = l ? ph_index(open + 1, l) : -1;
        if (i < 0) {
            ch_buf_add(&b, "{", 1);
            p = open + 1;
            continue;
        }
        if (json)
            notify_buf_json(&b, nz(values[i]));
        else
            ch_buf_str(&b, values[i]);
        p = open + 1 + l + 1;
    }
    return ch_buf_take(&b);
}

/* ---- signatures ------------------------------------------------------- */

static bool hmac_b64(const char *key, size_t klen, const char *msg, size_t mlen, char *out,
                     size_t n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, md, &mdlen))
        return false;
    if (n < 4 * ((mdlen + 2) / 3) + 1)
        return false;
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    return true;
}

bool notify_sign_dingtalk(const char *secret, int64_t ts_ms, char *out, size_t n)
{
    char msg[512], b64[64];
    int len = snprintf(msg, sizeof msg, "%lld\n%s", (long long)ts_ms, secret);
    if (len < 0 || (size_t)len >= sizeof msg ||
        !hmac_b64(secret, strlen(secret), msg, (size_t)len, b64, sizeof b64))
        return false;
    /* URL-encode: base64's + / = are the only characters that need it */
    size_t o = 0;
    for (const char *p = b64; *p; p++) {
        if (o + 4 > n)
            return false;
        if (isalnum((unsigned char)*p)) {
            out[o++] = *p;
        } else {
            snprintf(out + o, 4, "%%%02X", (unsigned char)*p);
            o += 3;
        }
    }
    out[o] = '\0';
    return true;
}

bool notify_sign_feishu(const char *secret, int64_t ts_s, char *out, size_t n)
{
    char key[512];
    int len = snprintf(key, sizeof key, "%lld\n%s", (long long)ts_s, secret);
    return len >= 0 && (size_t)len < sizeof key && hmac_b64(key, (size_t)len, "", 0, out, n);
}

/* ---- channel types ---------------------------------------------------- */

/* text cut to at most max bytes on a character boundary (WeCom's 2048). */
static void cut_utf8(char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max)
        return;
    size_t i = max;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    s[i] = '\0';
}

static json_t *jstr(const char *s)
{
    char *c = ch_utf8_fix(ch_xstrdup(nz(s)));
    json_t *j = json_string(c);
    free(c);
    return j ? j : json_string("");
}

static json_t *jlist(const struct cfg_list *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(a, jstr(((char **)l->items)[i]));
    return a;
}

static char *channel_text(const struct notify_channel *c, const struct notify_msg *m)
{
    return notify_text(m->ev, c->locale, m->raise_hms);
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        abort();
    return s;
}

static int build_wecom(const struct notify_channel *c, const struct notify_msg *m,
                       struct notify_req *req)
{
    char *text = channel_text(c, m);
    cut_utf8(text, 2048);
    json_t *t = json_pack("{s:o}", "content", jstr(text));
    free(text);
    if (c->mention.n)
        json_object_set_new(t, "mentioned_mobile_list", jlist(&c->mention));
    req->body = dump(json_pack("{s:s,s:o}", "msgtype", "text", "text", t));
    req->url = ch_xstrdup(c->url);
    req->content_type = ch_xstrdup("application/json; charset=utf-8");
    return 0;
}

static int build_dingtalk(const struct notify_channel *c, const struct notify_msg *m,
                          struct notify_req *req)
{
    struct ch_buf b = {0};
    char *text = channel_text(c, m);
    ch_buf_str(&b, text);
    free(text);
    for (size_t i = 0; i < c->mention.n; i++) { /* DingTalk shows @ only when in the text */
        ch_buf_str(&b, i ? " @" : "\n@");
        ch_buf_str(&b, ((char **)c->mention.items)[i]);
    }
    text = ch_buf_take(&b);
    req->body = dump(json_pack("{s:s,s:{s:o},s:{s:o,s:b}}", "msgtype", "text", "text", "content",
                               jstr(text), "at", "atMobiles", jlist(&c->mention), "isAtAll", 0));
    free(text);
    if (c->sign) {
        char sign[128];
        if (!notify_sign_dingtalk(c->secret, m->now_ms, sign, sizeof sign))
            return CH_EINVAL;
        size_t len = strlen(c->url) + strlen(sign) + 64;
        req->url = ch_xmalloc(len);
        snprintf(req->url, len, "%s%ctimestamp=%lld&sign=%s", c->url,
                 strchr(c->url, '?') ? '&' : '?', (long long)m->now_ms, sign);
    } else {
        req->url = ch_xstrdup(c->url);
    }
    req->content_type = ch_xstrdup("application/json; charset=utf-8");
    return 0;
}

static int build_feishu(const struct notify_channel *c, const struct notify_msg *m,
                        struct notify_req *req)
{
    char *text = channel_text(c, m);
    json_t *j = json_pack("{s:s,s:{s:o}}", "msg_type", "text", "content", "text", jstr(text));
    free(text);
    if (c->sign) {
        char sign[128], ts[32];
        int64_t s = m->now_ms / 1000;
        if (!notify_sign_feishu(c->secret, s, sign, sizeof sign)) {
            json_decref(j);
            return CH_EINVAL;
        }
        snprintf(ts, sizeof ts, "%lld", (long long)s);
        json_object_set_new(j, "timestamp", json_string(ts));
        json_object_set_new(j, "sign", json_string(sign));
    }
    req->body = dump(j);
    req->url = ch_xstrdup(c->url);
    req->content_type = ch_xstrdup("application/json; charset=utf-8");
    return 0;
}

/* The event as JSON: a webhook's body without a template. */
static char *event_json(const struct notify_msg *m, const char *text)
{
    const struct notify_event *e = m->ev;
    json_t *j = json_object();
    const char *names[] = {"site",  "site_name", "gateway", "alarm_id", "rule",    "kind",
                           "title", "where",     "who",     "device",   "message", "by"};
    const char *vals[] = {e->site,  e->site_name, e->gateway, e->alarm_id, e->rule,    e->kind,
                          e->title, e->where,     e->who,     e->device,   e->message, e->by};
    for (size_t i = 0; i < CH_ARRAY_LEN(names); i++)
        if (vals[i])
            json_object_set_new(j, names[i], jstr(vals[i]));
    json_object_set_new(j, "priority", json_string(notify_prio_name(e->priority)));
    json_object_set_new(j, "level", json_integer(e->level));
    json_object_set_new(j, "event", json_string(notify_event_name(e->event)));
    json_object_set_new(j, "raised_ms", json_integer(e->raised_ms));
    json_object_set_new(j, "ts_ms", json_integer(e->ts_ms));
    json_object_set_new(j, "text", jstr(text));
    return dump(j);
}

static int build_templated(const struct notify_channel *c, const struct notify_msg *m,
                           struct notify_req *req)
{
    char *text = channel_text(c, m);
    if (c->tmpl) {
        /* {title}: the kind's, in the channel's language, unless the event has one */
        struct notify_event ev = *m->ev;
        if (!ev.title || !*ev.title)
            ev.title = notify_kind_title(ev.kind, c->locale);
        req->body = notify_template_fill(c->tmpl, c->json, &ev, m->to, text, m->raise_hms);
        req->content_type = ch_xstrdup(c->content_type ? c->content_type
                                       : c->json       ? "application/json; charset=utf-8"
                                                       : "text/plain; charset=utf-8");
    } else {
        req->body = event_json(m, text);
        req->content_type =
            ch_xstrdup(c->content_type ? c->content_type : "application/json; charset=utf-8");
    }
    free(text);
    req->url = ch_xstrdup(c->url);
    return 0;
}

/* {"<field>":0} in a JSON answer; detail says what it said instead. */
static bool answer_zero(const char *body, const char *field, const char *alt, const char *msgf,
                        char *detail, size_t n)
{
    json_error_t err;
    json_t *j = json_loads(body ? body : "", 0, &err);
    if (!j || !json_is_object(j)) {
        snprintf(detail, n, "answer is not a JSON object");
        json_decref(j);
        return false;
    }
    json_t *code = json_object_get(j, field);
    if (!code && alt)
        code = json_object_get(j, alt);
    bool ok = code && json_is_integer(code) && json_integer_value(code) == 0;
    if (!ok) {
        const char *msg = json_string_value(json_object_get(j, msgf));
        if (!code || !json_is_integer(code))
            snprintf(detail, n, "answer has no %s", field);
        else
            snprintf(detail, n, "%s %lld %.100s", field, (long long)json_integer_value(code),
                     msg ? msg : "");
    }
    json_decref(j);
    return ok;
}

static bool accepted_errcode(const char *body, char *detail, size_t n)
{
    return answer_zero(body, "errcode", NULL, "errmsg", detail, n);
}

static bool accepted_feishu(const char *body, char *detail, size_t n)
{
    return answer_zero(body, "code", "StatusCode", "msg", detail, n);
}

static const char sms_default[] = "{\"to\":\"{to}\",\"text\":\"{text}\"}";

/* clang-format off */
static const struct notify_type types[] = {
    {.name = "webhook",  .templated = true, .build = build_templated},
    {.name = "wecom",    .rate = 20, .build = build_wecom, .accepted = accepted_errcode},
    {.name = "dingtalk", .sign = true, .rate = 20, .build = build_dingtalk, .accepted = accepted_errcode},
    {.name = "feishu",   .sign = true, .rate = 100, .build = build_feishu, .accepted = accepted_feishu},
    {.name = "sms",      .templated = true, .deftmpl = sms_default, .build = build_templated},
};
/* clang-format on */

const struct notify_type *notify_type_find(const char *name)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(types); i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}
