/* The notifier's pure parts and its queue without a receiver
 * (common/notify*.c): every class of config error reported with
 * file:line and key in one pass; templates escaping what JSON needs and
 * nothing else; the DingTalk and Feishu signatures against vectors computed
 * independently (Python's hmac/base64, and the DingTalk one also published
 * by the dingding crate); the message text per locale; rosters on both
 * sides of each window's edges, across midnight; levels past the last;
 * dedupe per (alarm, occurrence, level, event, channel), also across a
 * reopen, and an ACK cancelling pending escalations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "capture.h"
#include "err.h"
#include "notify.h"
#include "util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <libfyaml.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Parses text (written to a file, so reports name it) and returns the rc;
 * stderr into err. */
static int parse_text(const char *text, struct notify_cfg **cfg, char *err, size_t errn, char *path,
                      size_t pathn)
{
    char tmpl[] = "/tmp/notify-test-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    snprintf(path, pathn, "%s", tmpl);
    struct fy_document *doc = fy_document_build_from_file(NULL, tmpl);
    assert_non_null(doc);
    struct fy_node *node = fy_node_mapping_lookup_by_string(fy_document_root(doc), "notify", FY_NT);
    struct capture cap;
    assert_int_equal(capture_begin(&cap), 0);
    int rc = notify_cfg_parse(node, cfg);
    capture_end(&cap, err, errn);
    fy_document_destroy(doc);
    unlink(tmpl);
    return rc;
}

/* True if err has a line "path:line:" holding every word of what. */
static bool reported(const char *err, const char *path, int line, const char *what)
{
    char at[300];
    snprintf(at, sizeof at, "%s:%d:", path, line);
    for (const char *p = err; (p = strstr(p, at)) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char l[1024];
        snprintf(l, sizeof l, "%.*s", (int)len, p);
        if (strstr(l, what))
            return true;
    }
    return false;
}

static const char good_cfg[] = "notify:\n"
                               "  channels:\n"
                               "    - id: day-wecom\n"
                               "      type: wecom\n"
                               "      url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K\n"
                               "    - id: night-wecom\n"
                               "      type: wecom\n"
                               "      url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=N\n"
                               "    - id: nurse-sms\n"
                               "      name: 护士长\n"
                               "      type: sms\n"
                               "      url: https://sms.example/api/send\n"
                               "      to: ['13900000000']\n"
                               "    - id: boss-ding\n"
                               "      type: dingtalk\n"
                               "      url: https://oapi.dingtalk.com/robot/send?access_token=T\n"
                               "      secret: SECabc\n"
                               "  rosters:\n"
                               "    on-duty:\n"
                               "      - {time: '07:00-19:00', channels: [day-wecom]}\n"
                               "      - {time: '19:00-07:00', channels: [night-wecom]}\n"
                               "  routes:\n"
                               "    - priorities: [high]\n"
                               "      levels:\n"
                               "        - [on-duty]\n"
                               "        - [nurse-sms]\n"
                               "        - [boss-ding, nurse-sms, on-duty]\n"
                               "    - levels: [[nurse-sms]]\n";

static void test_config_errors(void **state)
{
    (void)state;
    static const char text[] = "notify:\n"                                           /* 1 */
                               "  channels:\n"                                       /* 2 */
                               "    - id: a\n"                                       /* 3 */
                               "      type: wecom\n"                                 /* 4 */
                               "      url: ftp://example.com/x\n"                    /* 5 */
                               "    - id: a\n"                                       /* 6 */
                               "      type: dingtalk\n"                              /* 7 */
                               "      url: https://oapi.dingtalk.com/robot/send\n"   /* 8 */
                               "    - id: s\n"                                       /* 9 */
                               "      type: sms\n"                                   /* 10 */
                               "      url: https://sms.example/send\n"               /* 11 */
                               "      template: '{\"t\":\"{titel}\"}'\n"             /* 12 */
                               "    - id: f\n"                                       /* 13 */
                               "      type: feishu\n"                                /* 14 */
                               "      url: https://open.feishu.cn/hook\n"            /* 15 */
                               "      sign: false\n"                                 /* 16 */
                               "      template: 'x'\n"                               /* 17 */
                               "  rosters:\n"                                        /* 18 */
                               "    duty:\n"                                         /* 19 */
                               "      - {time: '25:00-07:00', channels: [a]}\n"      /* 20 */
                               "      - {time: '07:00-07:00', channels: [nobody]}\n" /* 21 */
                               "  routes:\n"                                         /* 22 */
                               "    - priorities: [urgent]\n"                        /* 23 */
                               "      levels:\n"                                     /* 24 */
                               "        - [duty, ghost]\n"                           /* 25 */
                               "      events: [raise, shout]\n"                      /* 26 */
                               "  retry: {first: 2s, max: 1s}\n";                    /* 27 */
    struct notify_cfg *cfg = NULL;
    char err[16384], path[64];
    assert_int_equal(parse_text(text, &cfg, err, sizeof err, path, sizeof path), CH_ECONFIG);
    assert_null(cfg);
    assert_true(reported(err, path, 5, "key 'url': 'ftp://example.com/x' is not an http"));
    assert_true(reported(err, path, 6, "channel 'a' is defined twice"));
    assert_true(reported(err, path, 7, "key 'secret'"));
    assert_true(reported(err, path, 12, "unknown placeholder {titel}"));
    assert_true(reported(err, path, 17, "key 'template': only sms and webhook"));
    assert_true(reported(err, path, 20, "key 'time': '25:00-07:00'"));
    assert_true(reported(err, path, 21, "key 'time': '07:00-07:00'"));
    assert_true(reported(err, path, 21, "no channel has the id 'nobody'"));
    assert_true(reported(err, path, 23, "key 'priorities': 'urgent'"));
    assert_true(reported(err, path, 25, "no roster or channel has the id 'ghost'"));
    assert_true(reported(err, path, 26, "key 'events': 'shout'"));
    assert_true(reported(err, path, 27, "max is shorter than first"));
    /* and the good one next to it parses */
    assert_int_equal(parse_text(good_cfg, &cfg, err, sizeof err, path, sizeof path), 0);
    assert_string_equal(err, "");
    notify_cfg_free(cfg);
}

static void test_config_unknown_and_missing(void **state)
{
    (void)state;
    static const char text[] = "notify:\n"
                               "  channels:\n"
                               "    - id: w\n"
                               "      typ: wecom\n"
                               "      url: https://x.example/\n"
                               "  routes:\n"
                               "    - levels: [[w]]\n"
                               "  rosters:\n"
                               "    w:\n"
                               "      - {time: '07:00-19:00', channels: [w]}\n";
    struct notify_cfg *cfg = NULL;
    char err[8192], path[64];
    assert_int_equal(parse_text(text, &cfg, err, sizeof err, path, sizeof path), CH_ECONFIG);
    assert_true(reported(err, path, 4, "unknown key 'typ' (did you mean 'type'?)"));
    assert_true(reported(err, path, 3, "missing required key 'type'"));
    assert_true(reported(err, path, 9, "'w' is already a channel's id"));
}

static void test_targets_roster_midnight(void **state)
{
    (void)state;
    struct notify_cfg *cfg = NULL;
    char err[4096], path[64];
    assert_int_equal(parse_text(good_cfg, &cfg, err, sizeof err, path, sizeof path), 0);
    const char *ids[8];
    struct {
        int minute;
        const char *want;
    } rows[] = {
        {7 * 60 - 1, "night-wecom"}, {7 * 60, "day-wecom"},         {19 * 60 - 1, "day-wecom"},
        {19 * 60, "night-wecom"},    {23 * 60 + 59, "night-wecom"}, {0, "night-wecom"},
        {12 * 60, "day-wecom"},
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(rows); i++) {
        assert_int_equal(notify_targets(cfg, 2, 0, rows[i].minute, ids, 8), 1);
        assert_string_equal(ids[0], rows[i].want);
    }
    assert_int_equal(notify_targets(cfg, 2, 1, 600, ids, 8), 1);
    assert_string_equal(ids[0], "nurse-sms");
    /* level 2 and beyond: the last level; no repeats */
    for (int level = 2; level <= 5; level++) {
        assert_int_equal(notify_targets(cfg, 2, level, 20 * 60, ids, 8), 3);
        assert_string_equal(ids[0], "boss-ding");
        assert_string_equal(ids[1], "nurse-sms");
        assert_string_equal(ids[2], "night-wecom");
    }
    /* medium and low: the second route (no priorities = all) */
    assert_int_equal(notify_targets(cfg, 1, 0, 600, ids, 8), 1);
    assert_string_equal(ids[0], "nurse-sms");
    assert_int_equal(notify_targets(cfg, 0, 3, 600, ids, 8), 1);
    notify_cfg_free(cfg);
}

static const struct notify_event tricky = {
    .site = "sunrise",
    .site_name = "夕阳红 \"一院\"",
    .alarm_id = "fall:radar-301",
    .kind = "fall",
    .title = "跌倒",
    .where = "3楼东区301 301-床A",
    .who = "王奶奶",
    .device = "radar-301",
    .message = "quote \" backslash \\ newline \n tab \t bell \x07 end",
    .priority = 2,
    .level = 1,
    .event = NOTIFY_ESCALATE,
};

static void test_template_json_escaping(void **state)
{
    (void)state;
    char *s = notify_template_fill("{\"m\":\"{message}\",\"n\":\"{site_name}\",\"t\":\"{title} "
                                   "{where}\",\"to\":\"{to}\",\"p\":\"{priority}\",\"l\":{level},"
                                   "\"e\":\"{event}\",\"x\":\"{text}\",\"lit\":\"{nope} {\"}",
                                   true, &tricky, "139\"00", "a\nb", "10:32:05");
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "m")), tricky.message);
    assert_string_equal(json_string_value(json_object_get(j, "n")), tricky.site_name);
    assert_string_equal(json_string_value(json_object_get(j, "t")), "跌倒 3楼东区301 301-床A");
    assert_string_equal(json_string_value(json_object_get(j, "to")), "139\"00");
    assert_string_equal(json_string_value(json_object_get(j, "p")), "high");
    assert_int_equal(json_integer_value(json_object_get(j, "l")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "e")), "escalate");
    assert_string_equal(json_string_value(json_object_get(j, "x")), "a\nb");
    assert_string_equal(json_string_value(json_object_get(j, "lit")), "{nope} {");
    json_decref(j);
    assert_non_null(strstr(s, "\\\" backslash \\\\ newline \\n tab \\t bell \\u0007"));
    free(s);
    /* not JSON: values as they are */
    s = notify_template_fill("{title}|{message}|{time}|{kind}", false, &tricky, NULL, "",
                             "07:05:00");
    assert_string_equal(s,
                        "跌倒|quote \" backslash \\ newline \n tab \t bell \x07 end|07:05:00|fall");
    free(s);
    /* a missing title falls back to the kind; NULL fields are empty */
    struct notify_event e = {.kind = "sos", .event = NOTIFY_RAISE};
    s = notify_template_fill("[{title}][{who}][{to}][{alarm_id}]", true, &e, NULL, NULL, NULL);
    assert_string_equal(s, "[sos][][][]");
    free(s);
}

static void test_signatures(void **state)
{
    (void)state;
    char out[128];
    /* python3: quote_plus(b64encode(hmac.new(secret, f"{ts}\n{secret}", sha256).digest())) */
    assert_true(notify_sign_dingtalk("SECtest0123456789abcdef", 1700000000000LL, out, sizeof out));
    assert_string_equal(out, "%2FlfnxUUu80FwVTsIlv2F1cMGBb%2BPxEKAwYh%2FbsRxXcc%3D");
    /* the dingding crate's own test vector */
    assert_true(notify_sign_dingtalk("secret", 1700000000000LL, out, sizeof out));
    assert_string_equal(out, "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D");
    /* one millisecond later is another signature */
    assert_true(notify_sign_dingtalk("secret", 1700000000001LL, out, sizeof out));
    assert_string_not_equal(out, "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D");
    /* python3: b64encode(hmac.new(f"{ts}\n{secret}", b"", sha256).digest()) */
    assert_true(notify_sign_feishu("feishu-secret-xyz", 1700000000, out, sizeof out));
    assert_string_equal(out, "RpXbw7bncheMXKEHLeETmnhcqsBrZOUBOwyPTuLV4ic=");
    /* too small a buffer */
    assert_false(notify_sign_feishu("feishu-secret-xyz", 1700000000, out, 44));
    assert_true(notify_sign_feishu("feishu-secret-xyz", 1700000000, out, 45));
}

static void test_text(void **state)
{
    (void)state;
    struct notify_event e = tricky;
    e.message = "请立即查看";
    char *s = notify_text(&e, NULL, "10:32:05");
    assert_string_equal(
        s, "【紧急】跌倒 · 3楼东区301 301-床A · 王奶奶\n10:32:05 起 · 第1次升级\n请立即查看");
    free(s);
    e.level = 0;
    e.priority = 1;
    s = notify_text(&e, "zh", "10:32:05");
    assert_string_equal(s, "【重要】跌倒 · 3楼东区301 301-床A · 王奶奶\n10:32:05 起\n请立即查看");
    free(s);
    e.event = NOTIFY_ACK;
    e.by = "护士小王";
    s = notify_text(&e, NULL, "10:32:05");
    assert_string_equal(s, "已确认 跌倒 · 3楼东区301 301-床A · 王奶奶 · 确认人 护士小王");
    free(s);
    e.event = NOTIFY_CLEAR;
    e.where = NULL;
    e.who = NULL;
    s = notify_text(&e, "en", "10:32:05");
    assert_string_equal(s, "Cleared: 跌倒 · radar-301");
    free(s);
    e.event = NOTIFY_ESCALATE;
    e.level = 3;
    e.priority = 2;
    e.message = NULL;
    s = notify_text(&e, "en", "23:59:59");
    assert_string_equal(s, "[URGENT] 跌倒 · radar-301\nsince 23:59:59 · escalation 3");
    free(s);
}

/* ---- the queue, against a port that refuses connections -------------- */

struct seen {
    int cancelled, final;
};

static void on_result(void *arg, const struct notify_result *r)
{
    struct seen *s = arg;
    if (r->final)
        __atomic_fetch_add(&s->final, 1, __ATOMIC_SEQ_CST);
    if (r->final && strcmp(r->detail, "cancelled: acknowledged") == 0)
        __atomic_fetch_add(&s->cancelled, 1, __ATOMIC_SEQ_CST);
}

static int refused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* bound once, nobody listens: connections are refused */
    return ntohs(a.sin_port);
}

static void wait_final(struct seen *s, int n)
{
    for (int i = 0; i < 500 && __atomic_load_n(&s->final, __ATOMIC_SEQ_CST) < n; i++)
        ch_sleep_ms(10);
    assert_int_equal(__atomic_load_n(&s->final, __ATOMIC_SEQ_CST), n);
}

static void test_dedupe_and_ack(void **state)
{
    (void)state;
    char text[1024], err[4096], path[64];
    snprintf(text, sizeof text,
             "notify:\n"
             "  channels:\n"
             "    - {id: hook, type: webhook, url: 'http://127.0.0.1:%d/x'}\n"
             "  routes:\n"
             "    - levels: [[hook]]\n"
             "      events: [raise, escalate, ack]\n"
             "  retry: {first: 1h, max: 1h, give_up: 2h}\n",
             refused_port());
    struct notify_cfg *cfg = NULL;
    assert_int_equal(parse_text(text, &cfg, err, sizeof err, path, sizeof path), 0);
    char dir[] = "/tmp/notify-state-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct seen seen = {0};
    struct notifier *n = NULL;
    assert_int_equal(notify_open(cfg, dir, "Asia/Shanghai", on_result, &seen, &n), 0);
    struct notify_event e = {.alarm_id = "fall:r1",
                             .priority = 2,
                             .level = 0,
                             .event = NOTIFY_RAISE,
                             .raised_ms = 1000,
                             .ts_ms = ch_now_ms()};
    struct notify_stats st;
    notify_event(n, &e);
    notify_event(n, &e); /* the same key */
    notify_get_stats(n, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.deduped, 1);
    e.level = 1; /* each part of the key makes another */
    e.event = NOTIFY_ESCALATE;
    notify_event(n, &e);
    e.raised_ms = 2000;
    notify_event(n, &e);
    e.alarm_id = "fall:r2";
    notify_event(n, &e);
    notify_get_stats(n, &st);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.deduped, 1);
    assert_int_equal(st.pending, 4);
    notify_close(n);

    /* reopened: the four are pending again, and still deduped */
    n = NULL;
    assert_int_equal(notify_open(cfg, dir, NULL, on_result, &seen, &n), 0);
    notify_event(n, &e);
    notify_get_stats(n, &st);
    assert_int_equal(st.pending, 4);
    assert_int_equal(st.deduped, 1);
    for (int i = 0; i < 500 && st.failed_tries < 4; i++) { /* none being sent at the ACK */
        ch_sleep_ms(10);
        notify_get_stats(n, &st);
    }
    assert_int_equal(st.failed_tries, 4);
    /* an ACK of fall:r1 at 1000 cancels its two, not the other occurrence's */
    struct notify_event ack = {.alarm_id = "fall:r1",
                               .priority = 2,
                               .level = 1,
                               .event = NOTIFY_ACK,
                               .raised_ms = 1000,
                               .ts_ms = ch_now_ms()};
    notify_event(n, &ack);
    wait_final(&seen, 2);
    assert_int_equal(seen.cancelled, 2);
    notify_get_stats(n, &st);
    assert_int_equal(st.cancelled, 2);
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.queued, 4); /* no ack: nobody was told of the raise */
    notify_close(n);

    /* cancelled keys are done: a late repeat of the raise is deduped */
    n = NULL;
    assert_int_equal(notify_open(cfg, dir, NULL, on_result, &seen, &n), 0);
    e.alarm_id = "fall:r1";
    e.raised_ms = 1000;
    e.level = 0;
    e.event = NOTIFY_RAISE;
    notify_event(n, &e);
    notify_get_stats(n, &st);
    assert_int_equal(st.deduped, 1);
    assert_int_equal(st.pending, 2);
    notify_close(n);
    notify_cfg_free(cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A channel's rate: at most rate tries in a minute, the rest wait (counted
 * once each), never dropped; a rate one higher holds nothing. */
static void test_rate(void **state)
{
    (void)state;
    for (int rate = 2; rate <= 3; rate++) {
        char text[1024], err[4096], path[64];
        snprintf(text, sizeof text,
                 "notify:\n"
                 "  channels:\n"
                 "    - {id: hook, type: webhook, rate: %d, url: 'http://127.0.0.1:%d/x'}\n"
                 "  routes:\n"
                 "    - levels: [[hook]]\n"
                 "  retry: {first: 1h, max: 1h, give_up: 2h}\n",
                 rate, refused_port());
        struct notify_cfg *cfg = NULL;
        assert_int_equal(parse_text(text, &cfg, err, sizeof err, path, sizeof path), 0);
        struct notifier *n = NULL;
        assert_int_equal(notify_open(cfg, NULL, NULL, NULL, NULL, &n), 0);
        const char *ids[] = {"a:1", "a:2", "a:3"};
        for (size_t i = 0; i < 3; i++) {
            struct notify_event e = {.alarm_id = ids[i],
                                     .priority = 2,
                                     .event = NOTIFY_RAISE,
                                     .raised_ms = 1000,
                                     .ts_ms = ch_now_ms()};
            notify_event(n, &e);
        }
        struct notify_stats st = {0};
        for (int i = 0; i < 500 && st.failed_tries < (uint64_t)rate; i++) {
            ch_sleep_ms(10);
            notify_get_stats(n, &st);
        }
        ch_sleep_ms(200); /* time for a try the rate should have held */
        notify_get_stats(n, &st);
        assert_int_equal(st.failed_tries, rate);
        assert_int_equal(st.rate_limited, rate == 2 ? 1 : 0);
        assert_int_equal(st.pending, 3);
        assert_int_equal(st.given_up, 0);
        notify_close(n);
        notify_cfg_free(cfg);
    }
}

static void test_bad_tz(void **state)
{
    (void)state;
    char err[4096], path[64];
    struct notify_cfg *cfg = NULL;
    assert_int_equal(parse_text(good_cfg, &cfg, err, sizeof err, path, sizeof path), 0);
    struct notifier *n = NULL;
    struct capture cap;
    capture_begin(&cap);
    int rc1 = notify_open(cfg, NULL, "../etc/passwd", NULL, NULL, &n);
    int rc2 = notify_open(cfg, NULL, "Mars/Olympus_Mons", NULL, NULL, &n);
    capture_end(&cap, err, sizeof err);
    assert_int_equal(rc1, CH_ECONFIG);
    assert_int_equal(rc2, CH_ECONFIG);
    notify_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_unknown_and_missing),
        cmocka_unit_test(test_targets_roster_midnight),
        cmocka_unit_test(test_template_json_escaping),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_dedupe_and_ack),
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_bad_tz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
