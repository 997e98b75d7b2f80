/* Ingest and presence: what each message becomes, every rejection reason
 * counted, and online/offline tracking. The sink captures the points. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec.h"
#include "ingest.h"
#include "log.h"
#include "acks.h"
#include "hubcfg.h"
#include "lineproto.h"
#include "presence.h"
#include "registry.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct capture {
    char text[4096];
    size_t lines;
    int calls;
    int alert_calls; /* points handed over as alarm transitions */
    int fail;        /* what the sink returns: 0 kept, else an error */
};

static int sink(void *ctx, char *data, size_t len, size_t lines, enum ingest_points kind)
{
    struct capture *c = ctx;
    size_t have = strlen(c->text);
    if (have + len < sizeof c->text) { /* the first few points, for comparing */
        memcpy(c->text + have, data, len);
        c->text[have + len] = '\0';
    }
    c->lines += lines;
    c->calls++;
    c->alert_calls += kind == INGEST_ALERTS;
    free(data);
    return c->fail;
}

struct fixture {
    struct presence *p;
    struct ingest *in;
    struct capture cap;
};

static int setup(void **state)
{
    struct fixture *f = ch_xcalloc(1, sizeof *f);
    f->p = presence_new();
    f->in = ingest_new(f->p, sink, &f->cap);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ingest_free(f->in);
    presence_free(f->p);
    free(f);
    return 0;
}

#define TEL(site, gw)                                                                              \
    "{\"schema\":\"carehub/telemetry/1\",\"site\":\"" site "\",\"gateway\":\"" gw "\",\"seq\":7,"  \
    "\"ts\":1763850000123,\"readings\":[{\"device\":\"env-101\",\"measurement\":\"environment\","  \
    "\"room\":\"101\",\"ts\":1763850000100,\"quality\":\"good\",\"metrics\":{\"temperature\":"     \
    "23.4}}]}"
#define BIRTH(ts, version)                                                                         \
    "{\"schema\":\"carehub/status/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"online\":true,"      \
    "\"ts\":" ts ",\"version\":\"" version "\",\"boot_id\":\"3f2a9c0d4b5e6f708192a3b4c5d6e7f8\","  \
    "\"devices\":[]}"
#define WILL                                                                                       \
    "{\"schema\":\"carehub/status/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"online\":false}"

static enum ingest_result post(struct fixture *f, const char *topic, const char *payload,
                               bool retained)
{
    return ingest_message(f->in, topic, payload, strlen(payload), retained, 1763850099000);
}

static void test_telemetry_accepted(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", TEL("cq", "gw-01"), false),
                     INGEST_ACCEPTED);
    assert_string_equal(f->cap.text, "environment,device=env-101,gateway=gw-01,quality=good,"
                                     "room=101,site=cq temperature=23.4,seq=7i 1763850000100\n");
    assert_int_equal(f->cap.lines, 1);
    assert_int_equal(f->cap.alert_calls, 0);
    struct ingest_stats s;
    ingest_stats(f->in, &s);
    assert_int_equal(s.messages_received, 1);
    assert_int_equal(s.telemetry_ok, 1);
    assert_int_equal(s.readings, 1);
    /* telemetry alone does not make a gateway online */
    assert_int_equal(presence_online(f->p), 0);
}

/* Readings for hours whose summaries may be kept (ended 6 h ago) mark their
 * days stale, once per day, after the readings; readings of the last hours
 * do not. */
static void test_stale_days(void **state)
{
    struct fixture *f = *state;
    ingest_set_rollup_after(f->in, 6 * 3600000LL);
    const char *msg =
        "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"seq\":7,"
        "\"ts\":1763850000123,\"historical\":true,\"readings\":["
        "{\"device\":\"a\",\"measurement\":\"m\",\"ts\":1763596800500,\"quality\":\"good\","
        "\"metrics\":{\"x\":1}},"
        "{\"device\":\"a\",\"measurement\":\"m\",\"ts\":1763683199999,\"quality\":\"good\","
        "\"metrics\":{\"x\":2}},"
        "{\"device\":\"a\",\"measurement\":\"m\",\"ts\":1763510400000,\"quality\":\"good\","
        "\"metrics\":{\"x\":3}},"
        "{\"device\":\"a\",\"measurement\":\"m\",\"ts\":1763850000100,\"quality\":\"good\","
        "\"metrics\":{\"x\":4}},"
        "{\"device\":\"a\",\"measurement\":\"m\",\"ts\":1763807400000,\"quality\":\"good\","
        "\"metrics\":{\"x\":5}}]}";
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", msg, false), INGEST_ACCEPTED);
    assert_int_equal(f->cap.lines, 5 + 3);
    const char *first = strstr(f->cap.text, "carehub_rollup_stale,site=cq mark=\"");
    assert_non_null(first);
    assert_true(first > strstr(f->cap.text, "x=5,seq=11i")); /* behind the readings */
    assert_non_null(strstr(first, "\",marked_ms=1763850099000i 1763596800000\n"));
    assert_non_null(strstr(first, "\",marked_ms=1763850099000i 1763510400000\n"));
    /* today: 10:30 is in an hour that may be kept, 22:20 (x=4) not */
    assert_non_null(strstr(first, "\",marked_ms=1763850099000i 1763769600000\n"));
}

static void test_rejections_by_reason(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *topic, *payload;
        enum ingest_reason reason;
    } cases[] = {
        {"carehub/v1/cq/gw 01/telemetry", TEL("cq", "gw-01"), INGEST_INVALID_TOPIC},
        {"carehub/v1/cq/gw-01", TEL("cq", "gw-01"), INGEST_INVALID_TOPIC},
        {"other/v1/cq/gw-01/telemetry", TEL("cq", "gw-01"), INGEST_INVALID_TOPIC},
        {"carehub/v1/cq/gw-01/alerts", "{}", INGEST_UNKNOWN_KIND},
        {"carehub/v1/cq/gw-01/alert/extra", "{}", INGEST_UNKNOWN_KIND},
        {"carehub/v1/cq/gw-01/alert", "{}", INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/telemetry/extra", TEL("cq", "gw-01"), INGEST_UNKNOWN_KIND},
        {"carehub/v1/cq/gw-01/telemetry", "{\"schema\":", INGEST_INVALID_JSON},
        {"carehub/v1/cq/gw-01/status", "not json", INGEST_INVALID_JSON},
        {"carehub/v1/cq/gw-01/telemetry", "{\"schema\":\"carehub/telemetry/1\"}",
         INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/telemetry", WILL, INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/status", TEL("cq", "gw-01"), INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/telemetry", TEL("other-site", "gw-01"), INGEST_SITE_MISMATCH},
        {"carehub/v1/cq/gw-01/telemetry", TEL("cq", "gw-02"), INGEST_SITE_MISMATCH},
        {"carehub/v1/cq/gw-02/status", WILL, INGEST_SITE_MISMATCH},
    };
    uint64_t want[INGEST_N_REASONS] = {0};
    for (size_t i = 0; i < CH_ARRAY_LEN(cases); i++) {
        if (post(f, cases[i].topic, cases[i].payload, false) != INGEST_REJECTED)
            fail_msg("case %zu (%s) was not rejected", i, cases[i].topic);
        want[cases[i].reason]++;
    }
    /* one byte over the limit, whatever it holds */
    size_t big = INGEST_MAX_PAYLOAD + 1;
    char *payload = ch_xcalloc(1, big);
    assert_int_equal(ingest_message(f->in, "carehub/v1/cq/gw-01/telemetry", payload, big, false, 1),
                     INGEST_REJECTED);
    want[INGEST_OVERSIZE]++;
    free(payload);

    struct ingest_stats s;
    ingest_stats(f->in, &s);
    for (int r = 0; r < INGEST_N_REASONS; r++)
        if (s.rejected[r] != want[r])
            fail_msg("%s: %llu, want %llu", ingest_reason_name((enum ingest_reason)r),
                     (unsigned long long)s.rejected[r], (unsigned long long)want[r]);
    assert_int_equal(s.messages_received, CH_ARRAY_LEN(cases) + 1);
    assert_int_equal(s.telemetry_ok + s.status_ok + s.alerts_ok, 0);
    assert_int_equal(f->cap.calls, 0);

    /* and ingest goes on */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", TEL("cq", "gw-01"), false),
                     INGEST_ACCEPTED);
}

#define ALERT(site, gw, extra)                                                                     \
    "{\"schema\":\"carehub/alert/1\",\"site\":\"" site "\",\"gateway\":\"" gw "\","                \
    "\"alarm_id\":\"co2-high:env-101\",\"rule\":\"co2-high\",\"device\":\"env-101\","              \
    "\"room\":\"nap-1\",\"priority\":\"medium\",\"state\":\"unack\",\"event\":\"raise\","          \
    "\"escalation\":0,\"latched\":false,\"metric\":\"co2\",\"value\":1250,"                        \
    "\"ts_ms\":1763850300000,\"raised_ms\":1763850300000" extra "}"
#define ALERT_LINE                                                                                 \
    "alarm,alarm_id=co2-high:env-101,device=env-101,event=raise,gateway=gw-01,priority=medium,"    \
    "room=nap-1,rule=co2-high,site=cq,state=unack value=1250,metric=\"co2\",escalation=0i,"        \
    "latched=false,raised_ms=1763850300000i 1763850300000\n"

static void test_alert_accepted(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ""), false),
                     INGEST_ACCEPTED);
    assert_string_equal(f->cap.text, ALERT_LINE);
    assert_int_equal(f->cap.lines, 1);
    assert_int_equal(f->cap.alert_calls, 1); /* to the spool's alert lane */
    /* the other path's copy (or a QoS 1 redelivery): recognised, not stored
     * or counted again */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ""), false),
                     INGEST_IGNORED);
    assert_string_equal(f->cap.text, ALERT_LINE);
    assert_int_equal(f->cap.calls, 1);
    struct ingest_stats s;
    ingest_stats(f->in, &s);
    assert_int_equal(s.alerts_ok, 1);
    assert_int_equal(s.alerts_duplicate, 1);
    assert_int_equal(s.messages_received, 1);
    assert_int_equal(s.telemetry_ok + s.status_ok + s.readings, 0);
    for (int r = 0; r < INGEST_N_REASONS; r++)
        assert_int_equal(s.rejected[r], 0);
    /* an alert does not make a gateway online (only its birth does) */
    assert_int_equal(presence_online(f->p), 0);
}

/* Every way an alert is refused, each counted under its reason; nothing of
 * a refused alert reaches the sink, and good ones still do. */
static void test_alert_rejections(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *topic, *payload;
        enum ingest_reason reason;
    } cases[] = {
        {"carehub/v1/cq/gw-01/alert", "{\"schema\":\"carehub/alert/1\"", INGEST_INVALID_JSON},
        {"carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ",\"ts_ms\":1"), INGEST_INVALID_JSON},
        {"carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ",\"bed\":\"bed 1\""),
         INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ",\"message\":\"a\\nb\""),
         INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ",\"shelved_until_ms\":5"),
         INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/alert", TEL("cq", "gw-01"), INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/telemetry", ALERT("cq", "gw-01", ""), INGEST_INVALID_SCHEMA},
        {"carehub/v1/cq/gw-01/alert", ALERT("yb", "gw-01", ""), INGEST_SITE_MISMATCH},
        {"carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-02", ""), INGEST_SITE_MISMATCH},
        {"carehub/v1/cq/gw-01/alarm", ALERT("cq", "gw-01", ""), INGEST_UNKNOWN_KIND},
    };
    uint64_t want[INGEST_N_REASONS] = {0};
    for (size_t i = 0; i < CH_ARRAY_LEN(cases); i++) {
        if (post(f, cases[i].topic, cases[i].payload, false) != INGEST_REJECTED)
            fail_msg("case %zu (%s) was not rejected", i, cases[i].payload);
        want[cases[i].reason]++;
    }
    size_t big = INGEST_MAX_PAYLOAD + 1;
    char *payload = ch_xcalloc(1, big);
    assert_int_equal(ingest_message(f->in, "carehub/v1/cq/gw-01/alert", payload, big, false, 1),
                     INGEST_REJECTED);
    want[INGEST_OVERSIZE]++;
    free(payload);
    struct ingest_stats s;
    ingest_stats(f->in, &s);
    for (int r = 0; r < INGEST_N_REASONS; r++)
        if (s.rejected[r] != want[r])
            fail_msg("%s: %llu, want %llu", ingest_reason_name((enum ingest_reason)r),
                     (unsigned long long)s.rejected[r], (unsigned long long)want[r]);
    assert_int_equal(s.alerts_ok, 0);
    assert_int_equal(f->cap.calls, 0);

    assert_int_equal(post(f, "carehub/v1/cq/gw-01/alert", ALERT("cq", "gw-01", ""), false),
                     INGEST_ACCEPTED);
    assert_string_equal(f->cap.text, ALERT_LINE);
}

static void test_commands_ignored(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/cmd/ack", "{\"anything\":1}", false),
                     INGEST_IGNORED);
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/cmd", "x", false), INGEST_IGNORED);
    struct ingest_stats s;
    /* a well-formed command too: the hub does not act on it */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/cmd/shelve",
                          "{\"schema\":\"carehub/command/1\",\"action\":\"shelve\","
                          "\"alarm_id\":\"r:d\",\"by\":\"hub:op\",\"ts_ms\":5,"
                          "\"duration_ms\":60000}",
                          false),
                     INGEST_IGNORED);
    ingest_stats(f->in, &s);
    assert_int_equal(s.messages_received, 3);
    assert_int_equal(s.ignored, 3);
    for (int r = 0; r < INGEST_N_REASONS; r++)
        assert_int_equal(s.rejected[r], 0);
    assert_int_equal(f->cap.calls, 0);
}

static void test_presence(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", BIRTH("1000", "0.1.0"), false),
                     INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 1);
    /* the same birth again (a replay) changes nothing */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", BIRTH("1000", "0.1.0"), true),
                     INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 1);
    /* the will */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", WILL, false), INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 0);
    /* an older birth arriving late does not undo the will */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", BIRTH("900", "0.0.9"), false),
                     INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 0);
    /* a newer one does */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", BIRTH("2000", "0.1.1"), false),
                     INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 1);
    /* a second gateway */
    const char *other = "{\"schema\":\"carehub/status/1\",\"site\":\"yb\",\"gateway\":\"gw-9\","
                        "\"online\":true,\"ts\":5,\"version\":\"1\",\"boot_id\":"
                        "\"00000000000000000000000000000000\",\"devices\":[]}";
    assert_int_equal(post(f, "carehub/v1/yb/gw-9/status", other, false), INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 2);

    /* every status is stored as a point at its own ts, the will at arrival */
    assert_non_null(strstr(f->cap.text, "carehub_status,gateway=gw-01,site=cq online=false "
                                        "1763850099000\n"));
    assert_non_null(strstr(f->cap.text, "version=\"0.1.1\" 2000\n"));
    assert_int_equal(f->cap.lines, 6);
    struct ingest_stats s;
    ingest_stats(f->in, &s);
    assert_int_equal(s.status_ok, 6);
}

/* A will replayed by the broker (retained) has no time of its own: it moves
 * presence but is not stored again at the replay time. */
static void test_retained_will_not_stored(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", WILL, true), INGEST_ACCEPTED);
    assert_int_equal(f->cap.calls, 0);
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", BIRTH("1000", "0.1.0"), true),
                     INGEST_ACCEPTED);
    assert_int_equal(f->cap.calls, 1);
    assert_int_equal(presence_online(f->p), 1);
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", WILL, true), INGEST_ACCEPTED);
    assert_int_equal(presence_online(f->p), 0);
    assert_int_equal(f->cap.calls, 1);
}

/* Many gateways: the map grows and counts stay right. */
static void test_many_gateways(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 1000; i++) {
        char topic[96], payload[512];
        snprintf(topic, sizeof topic, "carehub/v1/site-%d/gw-%d/status", i % 37, i);
        snprintf(payload, sizeof payload,
                 "{\"schema\":\"carehub/status/1\",\"site\":\"site-%d\",\"gateway\":\"gw-%d\","
                 "\"online\":%s,\"ts\":%d,\"version\":\"1\",\"boot_id\":"
                 "\"00000000000000000000000000000000\",\"devices\":[]}",
                 i % 37, i, i % 4 ? "true" : "false", i + 1);
        assert_int_equal(ingest_message(f->in, topic, payload, strlen(payload), false, 1),
                         INGEST_ACCEPTED);
    }
    assert_int_equal(presence_online(f->p), 750);
}

/* What is kept is acknowledged to its gateway, and only that: a failing sink
 * acknowledges nothing; a message refused for its content is settled when its
 * numbers can be read (else it would come back forever). */
static void test_acks_noted(void **state)
{
    struct fixture *f = *state;
    struct acks *a = acks_new();
    ingest_set_acks(f->in, a);
    static const char alert[] =
        "{\"schema\":\"carehub/alert/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"seq\":3,"
        "\"oldest\":2,\"alarm_id\":\"sos:b1\",\"rule\":\"sos\",\"device\":\"b1\",\"priority\":"
        "\"high\",\"state\":\"unack\",\"event\":\"raise\",\"escalation\":0,\"latched\":true,"
        "\"ts_ms\":1763850300000,\"raised_ms\":1763850300000}";
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", TEL("cq", "gw-01"), false),
                     INGEST_ACCEPTED);
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/alert", alert, false), INGEST_ACCEPTED);
    f->cap.fail = -5; /* the spool refuses */
    static const char tel8[] =
        "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"seq\":8,"
        "\"ts\":1763850000123,\"readings\":[{\"device\":\"e\",\"measurement\":\"m\","
        "\"ts\":1763850000100,\"quality\":\"good\",\"metrics\":{\"x\":1}}]}";
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", tel8, false), INGEST_ACCEPTED);
    f->cap.fail = 0;
    /* refused: a reading without quality; its numbers 20..21 are settled */
    static const char bad[] =
        "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"seq\":20,"
        "\"ts\":1763850000123,\"readings\":[{\"device\":\"e\"},{\"device\":\"f\"}]}";
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/telemetry", bad, false), INGEST_REJECTED);
    struct ch_ack *v;
    size_t n = acks_take(a, "hub-a", 1763850300000, &v);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].gateway, "gw-01");
    assert_int_equal(v[0].n_readings, 2);
    assert_true(v[0].readings[0].lo == 7 && v[0].readings[0].hi == 7); /* not 8 */
    assert_true(v[0].readings[1].lo == 20 && v[0].readings[1].hi == 21);
    assert_int_equal(v[0].n_alerts, 1);
    assert_true(v[0].alerts[0].lo == 3 && v[0].alerts[0].hi == 3);
    free(v);
    assert_int_equal(acks_pending(a), 0);
    struct presence_seq_stats ps;
    presence_check_gaps(f->p, 0, 1000000, &ps);
    assert_int_equal(ps.alerts_missing, 1); /* alert 1: below its oldest, never seen */
    acks_free(a);
}

/* Ranges merge, stay per gateway, and at most CH_ACK_MAX_RANGES go per message. */
static void test_acks_ranges(void **state)
{
    (void)state;
    struct acks *a = acks_new();
    acks_note(a, "s", "g", ACKS_READINGS, 10, 19);
    acks_note(a, "s", "g", ACKS_READINGS, 30, 39);
    acks_note(a, "s", "g", ACKS_READINGS, 20, 29); /* joins both */
    acks_note(a, "s", "g", ACKS_READINGS, 5, 12);  /* overlaps */
    acks_note(a, "s", "g", ACKS_READINGS, 0, 3);   /* invalid: ignored */
    acks_note(a, "s", "h", ACKS_ALERTS, 1, 1);
    struct ch_ack *v;
    size_t n = acks_take(a, "hub", 1763850300000, &v);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(v[i].gateway, "g")) {
            assert_int_equal(v[i].n_readings, 1);
            assert_true(v[i].readings[0].lo == 5 && v[i].readings[0].hi == 39);
        } else {
            assert_int_equal(v[i].n_alerts, 1);
        }
    }
    free(v);
    for (uint64_t k = 0; k < CH_ACK_MAX_RANGES + 5; k++)
        acks_note(a, "s", "g", ACKS_READINGS, 1 + 3 * k, 1 + 3 * k);
    n = acks_take(a, "hub", 1763850300000, &v);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].n_readings, CH_ACK_MAX_RANGES);
    assert_true(v[0].readings[0].lo == 1);
    free(v);
    n = acks_take(a, "hub", 1763850300000, &v); /* the rest, next time */
    assert_int_equal(n, 1);
    assert_int_equal(v[0].n_readings, 5);
    free(v);
    assert_int_equal(acks_pending(a), 0);
    acks_free(a);
}

/* The second copy of an alert (the priority path's and the ingest
 * subscription's) is acknowledged again once the first is done, never
 * stored twice; a first copy the spool refused is forgotten, so the second
 * is handled; an alert that differs in one byte is not a copy. */
static void test_alert_copies(void **state)
{
    struct fixture *f = *state;
    struct acks *a = acks_new();
    ingest_set_acks(f->in, a);
    const char *topic = "carehub/v1/cq/gw-01/alert";
    assert_int_equal(post(f, topic, ALERT("cq", "gw-01", ",\"seq\":4"), false), INGEST_ACCEPTED);
    struct ch_ack *v;
    assert_int_equal(acks_take(a, "hub", 1, &v), 1);
    free(v);
    assert_int_equal(post(f, topic, ALERT("cq", "gw-01", ",\"seq\":4"), false), INGEST_IGNORED);
    assert_int_equal(acks_take(a, "hub", 1, &v), 1); /* acknowledged again */
    assert_true(v[0].n_alerts == 1 && v[0].alerts[0].lo == 4 && v[0].alerts[0].hi == 4);
    free(v);
    assert_int_equal(f->cap.alert_calls, 1);
    /* the spool refuses the first copy: not acknowledged, the second is handled */
    f->cap.fail = -5;
    assert_int_equal(post(f, topic, ALERT("cq", "gw-01", ",\"seq\":5"), false), INGEST_ACCEPTED);
    assert_int_equal(acks_pending(a), 0);
    f->cap.fail = 0;
    assert_int_equal(post(f, topic, ALERT("cq", "gw-01", ",\"seq\":5"), false), INGEST_ACCEPTED);
    assert_int_equal(f->cap.alert_calls, 3);
    assert_int_equal(acks_take(a, "hub", 1, &v), 1);
    assert_true(v[0].n_alerts == 1 && v[0].alerts[0].lo == 5);
    free(v);
    /* one byte apart, or on another gateway's topic: not a copy */
    assert_int_equal(post(f, topic, ALERT("cq", "gw-01", ",\"seq\":6"), false), INGEST_ACCEPTED);
    assert_int_equal(
        post(f, "carehub/v1/cq/gw-02/alert", ALERT("cq", "gw-01", ",\"seq\":6"), false),
        INGEST_REJECTED); /* site_mismatch, not a duplicate */
    struct ingest_stats st;
    ingest_stats(f->in, &st);
    assert_int_equal(st.alerts_duplicate, 1);
    assert_int_equal(st.alerts_ok, 4);
    acks_free(a);
}

/* With a registry: a birth declares the inventory; a message's readings of
 * undeclared devices are refused (not stored, acknowledged), the others
 * stored with their own numbers; before a birth, the devices beyond the
 * allowance are deferred (neither stored nor acknowledged, nor counted as
 * received); a gateway over its quota is shed unparsed, unacknowledged. */
static void test_registry_verdicts(void **state)
{
    struct fixture *f = *state;
    struct hubcfg_ingest cfg = {.rate = 10,
                                .burst = 3,
                                .max_devices = 100,
                                .devices_before_birth = 1,
                                .inventory_grace_ms = 0};
    struct registry *reg = registry_new(&cfg);
    struct acks *a = acks_new();
    ingest_set_registry(f->in, reg);
    ingest_set_acks(f->in, a);
    const char birth[] =
        "{\"schema\":\"carehub/status/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"online\":true,"
        "\"ts\":1763850000000,\"version\":\"1\",\"boot_id\":\"3f2a9c0d4b5e6f708192a3b4c5d6e7f8\","
        "\"devices\":[{\"id\":\"a\",\"profile\":\"p\",\"bus\":\"b\"}]}";
#define R3(d1, d2, d3)                                                                             \
    "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq\",\"gateway\":\"gw-01\",\"seq\":10,"        \
    "\"ts\":1763850000123,\"readings\":[{\"device\":\"" d1 "\",\"measurement\":\"m\","             \
    "\"ts\":1,\"quality\":\"good\",\"metrics\":{\"x\":1}},{\"device\":\"" d2 "\","                 \
    "\"measurement\":\"m\",\"ts\":2,\"quality\":\"good\",\"metrics\":{\"x\":2}},"                  \
    "{\"device\":\"" d3 "\",\"measurement\":\"m\",\"ts\":3,\"quality\":\"good\","                  \
    "\"metrics\":{\"x\":3}}]}"
    const char *topic = "carehub/v1/cq/gw-01/telemetry";
    /* no birth yet: "z" is let through (the one allowed), "y" waits; the
     * gateway's own id always passes */
    assert_int_equal(post(f, topic, R3("z", "y", "gw-01"), false), INGEST_ACCEPTED);
    assert_string_equal(f->cap.text,
                        "m,device=z,gateway=gw-01,quality=good,site=cq x=1,seq=10i 1\n"
                        "m,device=gw-01,gateway=gw-01,quality=good,site=cq x=3,seq=12i 3\n");
    struct ch_ack *v;
    assert_int_equal(acks_take(a, "hub", 1, &v), 1);
    assert_int_equal(v[0].n_readings, 2); /* 10 and 12: 11 waits */
    assert_true(v[0].readings[0].lo == 10 && v[0].readings[0].hi == 10);
    assert_true(v[0].readings[1].lo == 12 && v[0].readings[1].hi == 12);
    free(v);
    struct presence_seq_stats ps;
    presence_check_gaps(f->p, 0, 1000000, &ps);
    assert_int_equal(ps.readings_pending, 1); /* 11: not received, the gateway resends it */
    /* the birth: "a" declared; "z" and "y" are now refused, and acknowledged */
    assert_int_equal(post(f, "carehub/v1/cq/gw-01/status", birth, true), INGEST_ACCEPTED);
    f->cap.text[0] = '\0';
    ch_sleep_ms(350); /* the bucket (10 readings/s, 3 at most) refills */
    assert_int_equal(post(f, topic, R3("y", "a", "z"), false), INGEST_ACCEPTED);
    assert_string_equal(f->cap.text,
                        "m,device=a,gateway=gw-01,quality=good,site=cq x=2,seq=11i 2\n");
    assert_int_equal(acks_take(a, "hub", 1, &v), 1);
    assert_true(v[0].n_readings == 1 && v[0].readings[0].lo == 10 && v[0].readings[0].hi == 12);
    free(v);
    struct registry_stats rs;
    registry_stats(reg, &rs);
    assert_int_equal(rs.readings_refused, 2);
    assert_int_equal(rs.readings_deferred, 1);
    /* the bucket is empty now (3 charged): the next message is shed unparsed */
    f->cap.text[0] = '\0';
    assert_int_equal(post(f, topic, "not even JSON", false), INGEST_SHED);
    assert_int_equal(f->cap.text[0], '\0');
    assert_int_equal(acks_pending(a), 0);
    registry_stats(reg, &rs);
    assert_int_equal(rs.messages_shed, 1);
    assert_int_equal(rs.gateways_shedding, 1);
    struct ingest_stats st;
    ingest_stats(f->in, &st);
    assert_int_equal(st.readings, 3);
    assert_int_equal(st.rejected[INGEST_INVALID_JSON], 0);
    /* per gateway */
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(registry_report(reg, &b, "hub-a", 5), 1);
    assert_string_equal(b.data, "carehub_ingest,gateway=gw-01,hub=hub-a,site=cq readings=3i,"
                                "readings_refused=2i,readings_deferred=1i,messages_shed=1i,"
                                "devices=1i,born=true,shedding=true 5\n");
    lp_free(&b);
    lp_init(&b);
    assert_int_equal(registry_report(reg, &b, "hub-a", 6), 0); /* nothing changed */
    lp_free(&b);
#undef R3
    acks_free(a);
    registry_free(reg);
}

int main(void)
{
    log_set_level(LOGL_WARN); /* the rejections, not a thousand presence lines */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_telemetry_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_days, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejections_by_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alert_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alert_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_will_not_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_gateways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_noted, setup, teardown),
        cmocka_unit_test(test_acks_ranges),
        cmocka_unit_test_setup_teardown(test_alert_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_verdicts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
