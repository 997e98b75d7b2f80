/* Notifier: alarms reach a carer's phone, not only a screen.
 *
 * The alarm module hands over each transition worth telling someone
 * (notify_event); the notifier works out who is told, by the routes, the
 * escalation level and the duty roster at that time of day, and delivers
 * one message per (event, channel, recipient number) over HTTP(S): a WeCom
 * (企业微信) group robot, a DingTalk (钉钉) custom robot, a Feishu (飞书)
 * custom bot, an SMS/voice HTTP gateway, or a plain webhook.
 *
 * Configuration (care-edge's site file, key notify:):
 *
 *   notify:
 *     channels:
 *       - id: carers-wecom
 *         name: 值班护理员群          # who it reaches, any UTF-8 (results, logs)
 *         type: wecom                # webhook | wecom | dingtalk | feishu | sms
 *         url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=XXXX
 *         mention: ["13800000000"]   # wecom mentioned_mobile_list, dingtalk at.atMobiles
 *         rate: 20                   # at most this many per minute (queued, never dropped)
 *       - id: manager-ding
 *         name: 院长
 *         type: dingtalk
 *         url: https://oapi.dingtalk.com/robot/send?access_token=XXXX
 *         secret: SECxxxx            # 加签; required unless sign: false
 *       - id: nurse-sms
 *         name: 护士长
 *         type: sms
 *         url: https://sms.example/api/send
 *         headers: {Authorization: "Bearer xyz"}
 *         to: ["13900000000"]        # one request per number ({to})
 *         template: '{"to":"{to}","text":"{title} {where} {who} {time}"}'
 *       - id: ops-hook
 *         type: webhook              # body: the event as JSON unless template
 *         url: https://ops.example/hook
 *         locale: en                 # zh (default) | en: the text's language
 *     rosters:                       # duty by time of day (site time zone)
 *       on-duty:
 *         - {time: "07:00-19:00", channels: [carers-wecom]}
 *         - {time: "19:00-07:00", channels: [night-wecom]}   # crosses midnight
 *     routes:                        # the first whose priorities match
 *       - priorities: [high]         # absent: every priority
 *         levels:                    # levels[i]: escalation level i (roster or channel ids);
 *           - [on-duty]              # levels beyond the last reuse the last;
 *                                    # [] is nobody (the hub tells that level, or
 *                                    # the gateway: route each level on one side)
 *           - [nurse-sms]
 *           - [manager-ding, nurse-sms]
 *         events: [raise, escalate, ack]   # default [raise, escalate]
 *     retry: {first: 2s, max: 5m, give_up: 1h}
 *     queue: 1000                    # pending deliveries at most
 *
 * Channel keys: id (ASCII id), name (default: the id), type, url (http or
 * https), secret and sign (dingtalk, feishu: sign defaults to true and then
 * secret is required), mention, to (sms), headers (a mapping of header
 * names to values), template and content_type (sms, webhook; the robots'
 * bodies are fixed), rate (per minute; default 20 for wecom and dingtalk,
 * 100 for feishu, 0 = unlimited for the others), locale. Template
 * placeholders: {site} {site_name} {title} {kind} {where} {who} {device}
 * {message} {priority} {level} {time} {to} {alarm_id} {event} {text}; an
 * unknown one is a configuration error. When the body is JSON
 * (content_type names json, or by default the template begins with { or
 * [) every substituted value is JSON-string-escaped, as it sits between
 * quotes. {time} is the raise's wall-clock time HH:MM:SS in the site's
 * zone; {text} the message text below; {priority} high/medium/low;
 * {event} raise/escalate/ack/clear.
 *
 * Message text (one builder, a small table per locale), e.g.
 *   【紧急】跌倒 · 3楼东区301 301-床A · 王奶奶
 *   10:32:05 起 · 第1次升级
 *   <the rule's message>
 * and for an acknowledgement "已确认 跌倒 · 3楼东区301 · 王奶奶 · 确认人 护士小王".
 *
 * Routing. RAISE and ESCALATE go to levels[level] of the first route whose
 * priorities hold the event's priority (and that lists the event); a
 * roster names the channels of the window holding the event's time of day
 * in the site's zone. ACK and CLEAR (when the route lists them) go to the
 * channels that were delivered a RAISE or ESCALATE of that occurrence
 * (alarm_id, raised_ms), or are sending one.
 *
 * Delivery. notify_event() only enqueues: it never waits for the network
 * (it writes the new deliveries' files, below). One worker thread sends,
 * one request at a time, highest priority first, then oldest. Each try is a
 * libcurl request (10 s timeout, 5 s to connect, certificates verified
 * against the system's CAs, redirects not followed: a 3xx is a failure).
 * It succeeds on HTTP 2xx and, for the robots, a body saying so: WeCom and
 * DingTalk {"errcode":0}, Feishu {"code":0} (or the older
 * {"StatusCode":0}). A failed try is tried again after first, doubling,
 * capped at max, each wait ±20 % at random; a delivery not through after
 * give_up (from its enqueueing) is given up. A channel's rate is a sliding
 * minute: at most rate sends in any 60 s; what is over waits in the queue
 * (counted rate_limited once per delivery). A full queue drops its lowest
 * priority delivery, the oldest of them (or the new one, if lower still),
 * logged and reported as a final failure "dropped: queue full".
 *
 * Exactly once per occurrence. The key (alarm_id, raised_ms, level, event,
 * channel) is queued at most once: a repeated notify_event() with a key
 * that is pending or was finished within 24 h is dropped and counted
 * deduped, also after a restart. An ACK cancels, at once, the pending
 * RAISE and ESCALATE deliveries of its occurrence (not one being sent at
 * that moment): final result "cancelled: acknowledged".
 *
 * Durability (state_dir; NULL: memory only). Each delivery is written as
 * state_dir/pending/<seq>.json (temporary file, fsync, rename) before it is
 * queued and removed when final, so notify_open() resumes what a stop or a
 * crash left; its age counts against give_up by the wall clock (a delivery
 * older than give_up at open is given up). Every final outcome appends a
 * line to state_dir/delivered.log (fsync'd before the pending file goes),
 * read back at open for dedupe and for routing ACKs, and rewritten without
 * lines older than 24 h at open and when it has grown to twice its live
 * lines. A crash between a receiver's answer and that line sends the
 * message again after the restart: at least once, at most one extra.
 *
 * Results. The callback is called from the worker thread, with no lock
 * held, for every failed try (final false) and once for each delivery's
 * final outcome (delivered, given up, cancelled, dropped). Everything it is
 * given is borrowed for the call. Every outcome is also logged
 * ([notify:<channel>]). Thread-safe: notify_event() and notify_get_stats()
 * from any thread. */
#ifndef CAREHUB_NOTIFY_H
#define CAREHUB_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fy_node;
struct notify_cfg;

/* Parses the YAML mapping node (the value of key notify:) with the key
 * tables of cfg.h. Returns 0 with *out (caller frees with
 * notify_cfg_free), or CH_ECONFIG after reporting every problem
 * (file:line:column and key): unknown channel or roster ids, bad times,
 * a secret missing, bad URLs or templates, duplicate ids. node is only
 * borrowed for the call: *out keeps copies. */
int notify_cfg_parse(struct fy_node *node, struct notify_cfg **out);
void notify_cfg_free(struct notify_cfg *c);

enum notify_kind { NOTIFY_RAISE = 0, NOTIFY_ESCALATE, NOTIFY_ACK, NOTIFY_CLEAR };

/* One alarm transition worth telling someone. Strings may be NULL (empty). */
struct notify_event {
    const char *site, *site_name, *gateway, *alarm_id, *rule, *kind; /* kind: sos, fall, ... */
    const char *title;                /* localized kind title, e.g. "跌倒" */
    const char *where, *who, *device; /* display text (names already chosen) */
    const char *message;              /* the rule's filled message */
    const char *by;                   /* who acknowledged (ACK) */
    int priority;                     /* 0 low 1 medium 2 high (enum ch_priority) */
    int level;                        /* escalation level: 0 the raise, 1.. escalations */
    int event;                        /* enum notify_kind */
    int64_t raised_ms, ts_ms;         /* occurrence start (with alarm_id: its key), this event */
};

/* A try's or a delivery's outcome (strings borrowed for the callback). */
struct notify_result {
    const char *alarm_id;
    int64_t raised_ms;
    int level;
    int event;
    const char *channel;   /* channel id */
    const char *recipient; /* the channel's name, e.g. "护士长" */
    const char *to;        /* the number (sms with to:), else "" */
    const char *type;      /* "wecom", "dingtalk", ... */
    bool ok;
    bool final;         /* delivered, or given up (expired, cancelled, dropped) */
    int attempts;       /* tries so far */
    const char *detail; /* "ok", "HTTP 503", "errcode 310000 sign not match", "expired after 1h" */
    int64_t ts_ms;      /* wall clock */
};
typedef void (*notify_result_fn)(void *arg, const struct notify_result *r);

struct notifier;

/* Starts the worker thread. cfg is borrowed and must outlive the notifier;
 * state_dir (created if missing, mode 0700) may be NULL for memory only;
 * tz is the site's IANA zone (e.g. "Asia/Shanghai", read from
 * /usr/share/zoneinfo) or NULL for the process's local time; cb (may be
 * NULL) gets the results. Pending deliveries found in state_dir are
 * queued again. Returns 0, or -errno / CH_ECONFIG (unknown tz) after
 * logging. */
int notify_open(const struct notify_cfg *cfg, const char *state_dir, const char *tz,
                notify_result_fn cb, void *arg, struct notifier **out);

/* Routes ev (borrowed for the call) and queues its deliveries; an ACK first
 * cancels the occurrence's pending RAISE/ESCALATE deliveries. Never waits
 * for the network; writes the new deliveries' files in state_dir. */
void notify_event(struct notifier *n, const struct notify_event *ev);

/* Stops the worker (waiting for a request under way, at most its 10 s
 * timeout) and frees n; undelivered deliveries stay in state_dir. */
void notify_close(struct notifier *n);

struct notify_stats {
    uint64_t queued;       /* deliveries accepted */
    uint64_t sent;         /* delivered */
    uint64_t failed_tries; /* tries that failed */
    uint64_t given_up;     /* expired or dropped (queue full) */
    uint64_t deduped;      /* (event, channel) keys already queued or done */
    uint64_t rate_limited; /* deliveries held by a channel's rate */
    uint64_t cancelled;    /* by an acknowledgement */
    uint64_t dropped;      /* of given_up: the queue was full */
    size_t pending;        /* not yet final */
};
void notify_get_stats(struct notifier *n, struct notify_stats *s);

/* ---- pure parts, for tests and for showing who would be told ------------ */

/* The ids of the channels a RAISE/ESCALATE at level with priority reaches
 * at minute_of_day (0..1439, site time) by the routes and rosters, in
 * order, without repeats; at most max of them into ids (borrowed from
 * cfg). Returns how many. */
size_t notify_targets(const struct notify_cfg *cfg, int priority, int level, int minute_of_day,
                      const char **ids, size_t max);

/* Fills template tmpl for ev (recipient number to, message text text,
 * {time} from raise_hms); json: escape every value for a JSON string.
 * Returns a heap string (caller frees). */
char *notify_template_fill(const char *tmpl, bool json, const struct notify_event *ev,
                           const char *to, const char *text, const char *raise_hms);

/* The message text of ev in locale "zh" or "en" (NULL: zh); raise_hms is
 * the raise's time of day "HH:MM:SS". Caller frees. */
/* The title people read for an alert's kind ("fall": "跌倒", or "Fall" for
 * a locale starting with "en"); unknown or NULL: "报警" / "Alarm". A
 * notify_event without a title gets its channel's locale's. */
const char *notify_kind_title(const char *kind, const char *locale);
/* The notify_event of an alarm transition t (schemas/codec.h) worth
 * telling: a raise (level 0), an escalation (its level), an
 * acknowledgement, the alarm's end; with the names people read (where is
 * written into where[n]; the rest borrows t). False for other events. */
struct ch_alert;
bool notify_event_of_alert(const struct ch_alert *t, struct notify_event *ne, char *where,
                           size_t n);
/* What came of a delivery, for an alarm's history: the channel type's name
 * in locale ("企业微信" / "WeCom"), the number with its middle hidden, the
 * detail: "短信 139****0002 ok". Cut to fit n (callers flatten it). */
void notify_outcome(const struct notify_result *r, const char *locale, char *out, size_t n);
char *notify_text(const struct notify_event *ev, const char *locale, const char *raise_hms);

/* DingTalk's sign for ts_ms: urlencode(base64(HMAC-SHA256(secret,
 * ts_ms "\n" secret))). Feishu's for ts_s: base64(HMAC-SHA256(ts_s "\n"
 * secret, "")). Into out (at least 128 bytes); return false if it does
 * not fit. */
bool notify_sign_dingtalk(const char *secret, int64_t ts_ms, char *out, size_t n);
bool notify_sign_feishu(const char *secret, int64_t ts_s, char *out, size_t n);

#endif
