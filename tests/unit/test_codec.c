/* The wire codec: round trips, every validation rule with the field it names,
 * the example payloads in schemas/examples (the same files the JSON Schema
 * contract test reads), and hostile input that must never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec.h"
#include "err.h"
#include "util.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------- */

static struct ch_metric metric(const char *name, double v, const char *unit)
{
    struct ch_metric m = {.value = v};
    ch_strlcpy(m.name, name, sizeof m.name);
    ch_strlcpy(m.unit, unit, sizeof m.unit);
    return m;
}

/* A batch like the one in the brief, plus a second reading without a room. */
static void sample_telemetry(struct ch_telemetry *t)
{
    memset(t, 0, sizeof *t);
    strcpy(t->site, "cq-yz-001");
    strcpy(t->gateway, "gw-01");
    t->seq = 42;
    t->ts_ms = 1763850000123;
    t->n_readings = 2;
    t->readings = ch_xcalloc(2, sizeof *t->readings);
    struct ch_reading *r = &t->readings[0];
    strcpy(r->device, "env-101");
    strcpy(r->measurement, "environment");
    strcpy(r->room, "101");
    r->ts_ms = 1763850000100;
    r->quality = CH_Q_GOOD;
    r->n_metrics = 2;
    r->metrics = ch_xcalloc(2, sizeof *r->metrics);
    r->metrics[0] = metric("temperature", 23.4, "°C");
    r->metrics[1] = metric("humidity", 51.0, "%RH");
    r = &t->readings[1];
    strcpy(r->device, "aq_3.lobby");
    strcpy(r->measurement, "air_quality");
    r->ts_ms = 1763850000200;
    r->quality = CH_Q_UNCERTAIN;
    r->n_metrics = 3;
    r->metrics = ch_xcalloc(3, sizeof *r->metrics);
    r->metrics[0] = metric("pm2_5", 12, "µg/m³");
    r->metrics[1] = metric("tvoc", -1.5e-3, "");
    r->metrics[2] = metric("pressure", 101325.25, "Pa");
}

static void sample_status(struct ch_status *s)
{
    memset(s, 0, sizeof *s);
    strcpy(s->site, "cq-yz-001");
    strcpy(s->gateway, "gw-01");
    s->online = true;
    s->ts_ms = 1763850000123;
    strcpy(s->version, "0.1.0");
    strcpy(s->boot_id, "3f2a9c0d4b5e6f708192a3b4c5d6e7f8");
    s->n_devices = 2;
    s->devices = ch_xcalloc(2, sizeof *s->devices);
    strcpy(s->devices[0].id, "env-101");
    strcpy(s->devices[0].profile, "jxct-th");
    strcpy(s->devices[0].bus, "rs485-1");
    strcpy(s->devices[0].room, "101");
    strcpy(s->devices[1].id, "bed-12");
    strcpy(s->devices[1].profile, "bed-uart");
    strcpy(s->devices[1].bus, "uart-2");
}

static void assert_telemetry_equal(const struct ch_telemetry *a, const struct ch_telemetry *b)
{
    assert_string_equal(a->site, b->site);
    assert_string_equal(a->gateway, b->gateway);
    assert_true(a->seq == b->seq);
    assert_true(a->ts_ms == b->ts_ms);
    assert_int_equal(a->historical, b->historical);
    assert_int_equal(a->n_readings, b->n_readings);
    for (size_t i = 0; i < a->n_readings; i++) {
        const struct ch_reading *x = &a->readings[i], *y = &b->readings[i];
        assert_string_equal(x->device, y->device);
        assert_string_equal(x->measurement, y->measurement);
        assert_string_equal(x->room, y->room);
        assert_true(x->ts_ms == y->ts_ms);
        assert_int_equal(x->quality, y->quality);
        assert_int_equal(x->n_metrics, y->n_metrics);
        for (size_t j = 0; j < x->n_metrics; j++) {
            assert_string_equal(x->metrics[j].name, y->metrics[j].name);
            assert_true(x->metrics[j].value == y->metrics[j].value);
            assert_string_equal(x->metrics[j].unit, y->metrics[j].unit);
        }
    }
}

static bool is_empty_telemetry(const struct ch_telemetry *t)
{
    static const struct ch_telemetry zero;
    return memcmp(t, &zero, sizeof zero) == 0;
}

/* ---- round trips ------------------------------------------------------ */

static void test_telemetry_roundtrip(void **state)
{
    (void)state;
    struct ch_telemetry t, back;
    sample_telemetry(&t);
    t.historical = true;
    char *json = ch_telemetry_encode(&t);
    assert_non_null(json);
    char err[256] = "";
    assert_int_equal(ch_telemetry_decode(json, strlen(json), &back, err, sizeof err), 0);
    assert_telemetry_equal(&t, &back);
    char *again = ch_telemetry_encode(&back);
    assert_string_equal(json, again);
    free(json);
    free(again);
    ch_telemetry_free(&t);
    ch_telemetry_free(&back);
}

/* The encoder's exact output for the batch in the brief: compact, keys in
 * contract order, reals with a decimal point, UTF-8 kept as is. */
static void test_telemetry_encode_exact(void **state)
{
    (void)state;
    struct ch_telemetry t;
    sample_telemetry(&t);
    t.n_readings = 1;
    char *json = ch_telemetry_encode(&t);
    assert_string_equal(
        json, "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq-yz-001\",\"gateway\":\"gw-01\","
              "\"seq\":42,\"ts\":1763850000123,\"historical\":false,\"readings\":[{\"device\":"
              "\"env-101\",\"measurement\":\"environment\",\"room\":\"101\",\"ts\":"
              "1763850000100,\"quality\":\"good\",\"metrics\":{\"temperature\":23.4,"
              "\"humidity\":51.0},\"units\":{\"temperature\":\"°C\",\"humidity\":\"%RH\"}}]}");
    free(json);
    t.n_readings = 2;
    ch_telemetry_free(&t);
}

static void test_status_roundtrip(void **state)
{
    (void)state;
    struct ch_status s, back;
    sample_status(&s);
    char *json = ch_status_encode(&s);
    assert_non_null(json);
    char err[256] = "";
    assert_int_equal(ch_status_decode(json, strlen(json), &back, err, sizeof err), 0);
    assert_string_equal(back.site, "cq-yz-001");
    assert_true(back.online);
    assert_true(back.ts_ms == s.ts_ms);
    assert_string_equal(back.version, "0.1.0");
    assert_string_equal(back.boot_id, s.boot_id);
    assert_int_equal(back.n_devices, 2);
    assert_string_equal(back.devices[0].room, "101");
    assert_string_equal(back.devices[1].room, "");
    assert_string_equal(back.devices[1].bus, "uart-2");
    char *again = ch_status_encode(&back);
    assert_string_equal(json, again);
    free(json);
    free(again);
    ch_status_free(&s);
    ch_status_free(&back);
}

/* The will: online false and nothing else. */
static void test_status_will(void **state)
{
    (void)state;
    struct ch_status s = {.online = false};
    strcpy(s.site, "cq-yz-001");
    strcpy(s.gateway, "gw-01");
    char *json = ch_status_encode(&s);
    assert_string_equal(json, "{\"schema\":\"carehub/status/"
                              "1\",\"site\":\"cq-yz-001\",\"gateway\":\"gw-01\",\"online\":false}");
    struct ch_status back;
    char err[128];
    assert_int_equal(ch_status_decode(json, strlen(json), &back, err, sizeof err), 0);
    assert_false(back.online);
    assert_true(back.ts_ms == 0);
    assert_string_equal(back.version, "");
    assert_int_equal(back.n_devices, 0);
    assert_null(back.devices);
    free(json);
    ch_status_free(&back);
}

/* JSON Schema counts 42.0 as an integer; so does the decoder. */
static void test_integral_reals(void **state)
{
    (void)state;
    const char *p =
        "{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":42.0,"
        "\"ts\":1.7e12,\"readings\":[{\"device\":\"d\",\"measurement\":\"m\",\"ts\":5e0,"
        "\"quality\":\"good\",\"metrics\":{\"x\":7}}]}";
    struct ch_telemetry t;
    char err[128] = "";
    assert_int_equal(ch_telemetry_decode(p, strlen(p), &t, err, sizeof err), 0);
    assert_true(t.seq == 42);
    assert_true(t.ts_ms == 1700000000000);
    assert_true(t.readings[0].ts_ms == 5);
    assert_true(t.readings[0].metrics[0].value == 7.0);
    ch_telemetry_free(&t);
}

/* ---- every rule, with the field it names ------------------------------- */

#define TOP          "\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"ts\":5"
#define RD           "\"device\":\"d\",\"measurement\":\"m\",\"ts\":5,\"quality\":\"good\""
#define ONE(reading) "{" TOP ",\"readings\":[" reading "]}"
#define GOOD         "{" RD ",\"metrics\":{\"x\":1}}"

struct bad_case {
    const char *payload;
    const char *error; /* the decoder's message must contain this */
};

static const struct bad_case bad_telemetry[] = {
    {"", "not JSON"},
    {"{", "not JSON"},
    {"{\"a\":1,\"a\":2}", "not JSON"},
    {"{} x", "not JSON"},
    {"[1,2]", "payload: not a JSON object"},
    {"42", "payload: not a JSON object"},
    {"{" TOP ",\"extra\":1,\"readings\":[" GOOD "]}", "extra: unknown key"},
    {"{\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"ts\":5,\"readings\":[" GOOD "]}",
     "schema: missing"},
    {"{\"schema\":\"carehub/telemetry/2\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"ts\":5,"
     "\"readings\":[" GOOD "]}",
     "schema: 'carehub/telemetry/2' is not"},
    {"{\"schema\":1,\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"ts\":5,\"readings\":[]}",
     "schema: not a string"},
    {"{\"schema\":\"carehub/telemetry/1\",\"gateway\":\"g\",\"seq\":1,\"ts\":5,\"readings\":[]}",
     "site: missing"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"a b\",\"gateway\":\"g\",\"seq\":1,\"ts\":5,"
     "\"readings\":[]}",
     "site: 'a b' is not an identifier"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\".g\",\"seq\":1,\"ts\":5,"
     "\"readings\":[]}",
     "gateway: '.g' is not an identifier"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\\n\",\"seq\":1,\"ts\":5,"
     "\"readings\":[]}",
     "gateway: 'g?' is not an identifier"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\""
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"seq\":1,\"ts\":5,"
     "\"readings\":[]}",
     "gateway: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is not an identifier"},
    {"{\"schema\":\"carehub/telemetry/"
     "1\",\"site\":\"s\",\"gateway\":\"g\",\"ts\":5,\"readings\":[]}",
     "seq: missing"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":-1,\"ts\":5,"
     "\"readings\":[]}",
     "seq: not an integer in 0..9223372036854775807"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1.5,\"ts\":5,"
     "\"readings\":[]}",
     "seq: not an integer"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":9.3e18,\"ts\":5,"
     "\"readings\":[]}",
     "seq: not an integer"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":\"1\",\"ts\":5,"
     "\"readings\":[]}",
     "seq: not an integer"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"ts\":0,"
     "\"readings\":[]}",
     "ts: not an integer in 1..9223372036854"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,"
     "\"ts\":9223372036855,\"readings\":[]}",
     "ts: not an integer"},
    {"{\"schema\":\"carehub/telemetry/"
     "1\",\"site\":\"s\",\"gateway\":\"g\",\"seq\":1,\"readings\":[]}",
     "ts: missing"},
    {"{" TOP ",\"historical\":1,\"readings\":[" GOOD "]}", "historical: not a boolean"},
    {"{" TOP "}", "readings: missing"},
    {"{" TOP ",\"readings\":{}}", "readings: not an array"},
    {"{" TOP ",\"readings\":[]}", "readings: must not be empty"},
    {ONE("7"), "readings[0]: not an object"},
    {"{" TOP ",\"readings\":[" GOOD "," GOOD "," GOOD ",{\"device\":\"d\"}]}",
     "readings[3].measurement: missing"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"resident\":\"x\"}"), "readings[0].resident: unknown key"},
    {ONE("{\"measurement\":\"m\",\"ts\":5,\"quality\":\"good\",\"metrics\":{\"x\":1}}"),
     "readings[0].device: missing"},
    {ONE("{\"device\":\"d d\",\"measurement\":\"m\",\"ts\":5,\"quality\":\"good\",\"metrics\":{"
         "\"x\":1}}"),
     "readings[0].device: 'd d' is not an identifier"},
    {ONE("{\"device\":\"d\",\"measurement\":\"carehub_hub\",\"ts\":5,\"quality\":\"good\","
         "\"metrics\":{\"x\":1}}"),
     "readings[0].measurement: 'carehub_hub' is reserved"},
    {ONE("{\"device\":\"d\",\"measurement\":\"_m\",\"ts\":5,\"quality\":\"good\",\"metrics\":{"
         "\"x\":1}}"),
     "readings[0].measurement: '_m' is reserved"},
    {ONE("{" RD ",\"room\":\"room 1\",\"metrics\":{\"x\":1}}"),
     "readings[0].room: 'room 1' is not an identifier"},
    {ONE("{" RD ",\"room\":7,\"metrics\":{\"x\":1}}"), "readings[0].room: not a string"},
    {ONE("{\"device\":\"d\",\"measurement\":\"m\",\"quality\":\"good\",\"metrics\":{\"x\":1}}"),
     "readings[0].ts: missing"},
    {ONE("{\"device\":\"d\",\"measurement\":\"m\",\"ts\":-5,\"quality\":\"good\",\"metrics\":{"
         "\"x\":1}}"),
     "readings[0].ts: not an integer"},
    {ONE("{\"device\":\"d\",\"measurement\":\"m\",\"ts\":5,\"metrics\":{\"x\":1}}"),
     "readings[0].quality: missing"},
    {ONE("{\"device\":\"d\",\"measurement\":\"m\",\"ts\":5,\"quality\":\"ok\",\"metrics\":{"
         "\"x\":1}}"),
     "readings[0].quality: 'ok' is not one of good, uncertain, bad"},
    {ONE("{" RD "}"), "readings[0].metrics: missing"},
    {ONE("{" RD ",\"metrics\":[1]}"), "readings[0].metrics: not an object"},
    {ONE("{" RD ",\"metrics\":{}}"), "readings[0].metrics: must not be empty"},
    {ONE("{" RD ",\"metrics\":{\"co2\":\"412\"}}"), "readings[0].metrics.co2: not a finite number"},
    {ONE("{" RD ",\"metrics\":{\"co2\":null}}"), "readings[0].metrics.co2: not a finite number"},
    {ONE("{" RD ",\"metrics\":{\"co2\":true}}"), "readings[0].metrics.co2: not a finite number"},
    {ONE("{" RD ",\"metrics\":{\"co2\":NaN}}"), "not JSON"},
    {ONE("{" RD ",\"metrics\":{\"co2\":1e400}}"), "not JSON"},
    {ONE("{" RD ",\"metrics\":{\"time\":1}}"), "readings[0].metrics.time: not a metric name"},
    {ONE("{" RD ",\"metrics\":{\"_value\":1}}"), "readings[0].metrics._value: not a metric name"},
    {ONE("{" RD ",\"metrics\":{\"a=b\":1}}"), "readings[0].metrics.a=b: not a metric name"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":[]}"), "readings[0].units: not an object"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"co2\":\"ppm\"}}"),
     "readings[0].units.co2: not a metric of this reading"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"x\":\"\"}}"),
     "readings[0].units.x: not a unit"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"x\":5}}"), "readings[0].units.x: not a unit"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"x\":\"C\\t\"}}"),
     "readings[0].units.x: not a unit"},
    /* 24 bytes in 8 characters */
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"x\":\"每分钟呼吸次数每\"}}"),
     "readings[0].units.x: not a unit (1..23 bytes"},
    {ONE("{" RD ",\"metrics\":{\"x\":1},\"units\":{\"x\":\"\\ud800\"}}"), "not JSON"},
};

static void test_telemetry_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < CH_ARRAY_LEN(bad_telemetry); i++) {
        const struct bad_case *c = &bad_telemetry[i];
        struct ch_telemetry t;
        char err[256] = "";
        int rc = ch_telemetry_decode(c->payload, strlen(c->payload), &t, err, sizeof err);
        if (rc != CH_EINVAL || !strstr(err, c->error))
            fail_msg("case %zu: %s\n  want rc %d and '%s'\n  got rc %d and '%s'", i, c->payload,
                     CH_EINVAL, c->error, rc, err);
        assert_true(is_empty_telemetry(&t));
    }
}

static void test_limits(void **state)
{
    (void)state;
    /* CH_MAX_METRICS metrics pass, one more fails */
    size_t cap = 64 + (CH_MAX_METRICS + 1) * 16 + 64;
    char *p = ch_xmalloc(cap);
    for (int n = CH_MAX_METRICS; n <= CH_MAX_METRICS + 1; n++) {
        size_t off = (size_t)snprintf(p, cap, "{" TOP ",\"readings\":[{" RD ",\"metrics\":{");
        for (int i = 0; i < n; i++)
            off += (size_t)snprintf(p + off, cap - off, "%s\"m%d\":%d", i ? "," : "", i, i);
        snprintf(p + off, cap - off, "}}]}");
        struct ch_telemetry t;
        char err[128] = "";
        int rc = ch_telemetry_decode(p, strlen(p), &t, err, sizeof err);
        if (n == CH_MAX_METRICS) {
            assert_int_equal(rc, 0);
            assert_int_equal(t.readings[0].n_metrics, CH_MAX_METRICS);
            ch_telemetry_free(&t);
        } else {
            assert_int_equal(rc, CH_EINVAL);
            assert_non_null(strstr(err, "readings[0].metrics: more than 256 metrics"));
        }
    }
    free(p);

    /* CH_MAX_READINGS readings pass, one more fails */
    cap = 64 + (CH_MAX_READINGS + 1) * (sizeof GOOD) + 64;
    p = ch_xmalloc(cap);
    for (int n = CH_MAX_READINGS; n <= CH_MAX_READINGS + 1; n++) {
        size_t off = (size_t)snprintf(p, cap, "{" TOP ",\"readings\":[");
        for (int i = 0; i < n; i++)
            off += (size_t)snprintf(p + off, cap - off, "%s" GOOD, i ? "," : "");
        snprintf(p + off, cap - off, "]}");
        struct ch_telemetry t;
        char err[128] = "";
        int rc = ch_telemetry_decode(p, strlen(p), &t, err, sizeof err);
        if (n == CH_MAX_READINGS) {
            assert_int_equal(rc, 0);
            assert_int_equal(t.n_readings, CH_MAX_READINGS);
            ch_telemetry_free(&t);
        } else {
            assert_int_equal(rc, CH_EINVAL);
            assert_non_null(strstr(err, "readings: more than 10000 items"));
        }
    }
    free(p);

    /* the largest seq and ts */
    const char *max = "{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\","
                      "\"seq\":9223372036854775807,\"ts\":9223372036854,\"readings\":[" GOOD "]}";
    struct ch_telemetry t;
    char err[128] = "";
    assert_int_equal(ch_telemetry_decode(max, strlen(max), &t, err, sizeof err), 0);
    assert_true(t.seq == (uint64_t)INT64_MAX);
    ch_telemetry_free(&t);
}

#define ST    "\"schema\":\"carehub/status/1\",\"site\":\"s\",\"gateway\":\"g\""
#define BOOT  "\"boot_id\":\"3f2a9c0d4b5e6f708192a3b4c5d6e7f8\""
#define BIRTH ST ",\"online\":true,\"ts\":5,\"version\":\"0.1.0\"," BOOT

static const struct bad_case bad_status[] = {
    {"{" ST "}", "online: missing"},
    {"{" ST ",\"online\":1}", "online: not a boolean"},
    {"{" ST ",\"online\":false,\"why\":1}", "why: unknown key"},
    {"{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"g\",\"online\":false}",
     "schema: 'carehub/telemetry/1' is not"},
    {"{" ST ",\"online\":true,\"version\":\"0.1.0\"," BOOT ",\"devices\":[]}", "ts: missing"},
    {"{" ST ",\"online\":true,\"ts\":5," BOOT ",\"devices\":[]}", "version: missing"},
    {"{" ST ",\"online\":true,\"ts\":5,\"version\":\"0.1.0\",\"devices\":[]}", "boot_id: missing"},
    {"{" BIRTH "}", "devices: missing"},
    {"{" ST ",\"online\":false,\"version\":\"\"}", "version: '' is not 1..31 chars"},
    {"{" ST ",\"online\":false,\"version\":\"1.0 beta\"}", "version: '1.0 beta' is not"},
    {"{" ST ",\"online\":false,\"version\":\"12345678901234567890123456789012\"}", "version: '"},
    {"{" ST ",\"online\":false,\"boot_id\":\"3F2A9C0D4B5E6F708192A3B4C5D6E7F8\"}",
     "boot_id: '3F2A9C0D4B5E6F708192A3B4C5D6E7F8' is not 32 lowercase hex digits"},
    {"{" ST ",\"online\":false,\"boot_id\":\"abc\"}", "boot_id: 'abc' is not 32"},
    {"{" ST ",\"online\":false,\"ts\":0}", "ts: not an integer"},
    {"{" BIRTH ",\"devices\":{}}", "devices: not an array"},
    {"{" BIRTH ",\"devices\":[{\"id\":\"a\",\"profile\":\"p\",\"bus\":\"b\"},1]}",
     "devices[1]: not an object"},
    {"{" BIRTH ",\"devices\":[{\"id\":\"a\",\"profile\":\"p\"}]}", "devices[0].bus: missing"},
    {"{" BIRTH ",\"devices\":[{\"id\":\"a\",\"profile\":\"p\",\"bus\":\"b\",\"x\":1}]}",
     "devices[0].x: unknown key"},
    {"{" BIRTH ",\"devices\":[{\"id\":\"a\",\"profile\":\"p p\",\"bus\":\"b\"}]}",
     "devices[0].profile: 'p p' is not an identifier"},
    {"{" BIRTH ",\"devices\":[{\"id\":\"a\",\"profile\":\"p\",\"bus\":\"b\",\"room\":\"-1\"}]}",
     "devices[0].room: '-1' is not an identifier"},
};

static void test_status_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < CH_ARRAY_LEN(bad_status); i++) {
        const struct bad_case *c = &bad_status[i];
        struct ch_status s;
        char err[256] = "";
        int rc = ch_status_decode(c->payload, strlen(c->payload), &s, err, sizeof err);
        if (rc != CH_EINVAL || !strstr(err, c->error))
            fail_msg("case %zu: %s\n  want '%s'\n  got rc %d and '%s'", i, c->payload, c->error, rc,
                     err);
        static const struct ch_status zero;
        assert_memory_equal(&s, &zero, sizeof zero);
    }
}

/* A message buffer that is too small, or absent, is cut, never overrun. */
static void test_small_err_buffer(void **state)
{
    (void)state;
    const char *p = ONE("{" RD ",\"metrics\":{\"co2\":\"x\"}}");
    struct ch_telemetry t;
    char err[9];
    memset(err, 'Z', sizeof err);
    assert_int_equal(ch_telemetry_decode(p, strlen(p), &t, err, 8), CH_EINVAL);
    assert_string_equal(err, "reading");
    assert_int_equal(err[8], 'Z');
    assert_int_equal(ch_telemetry_decode(p, strlen(p), &t, NULL, 0), CH_EINVAL);
}

/* ---- encoders refuse what breaks the contract --------------------------- */

static void test_encode_refuses(void **state)
{
    (void)state;
    enum { N = 14 };
    for (int i = 0; i < N; i++) {
        struct ch_telemetry t;
        sample_telemetry(&t);
        struct ch_reading *r = &t.readings[0];
        switch (i) {
        case 0:
            strcpy(t.site, "a b");
            break;
        case 1:
            t.gateway[0] = '\0';
            break;
        case 2:
            t.seq = (uint64_t)INT64_MAX + 1;
            break;
        case 3:
            t.ts_ms = 0;
            break;
        case 4:
            strcpy(r->device, "-d");
            break;
        case 5:
            strcpy(r->measurement, "carehub_status");
            break;
        case 6:
            strcpy(r->room, "a,b");
            break;
        case 7:
            r->quality = (enum ch_quality)7;
            break;
        case 8:
            r->metrics[1].value = NAN;
            break;
        case 9:
            r->metrics[1].value = INFINITY;
            break;
        case 10:
            strcpy(r->metrics[1].name, "temperature");
            break; /* duplicate */
        case 11:
            strcpy(r->metrics[1].name, "time");
            break;
        case 12:
            strcpy(r->metrics[1].unit, "\xff\xfe");
            break; /* not UTF-8 */
        case 13:
            memset(r->device, 'a', sizeof r->device);
            break; /* not terminated */
        }
        char *json = ch_telemetry_encode(&t);
        if (json)
            fail_msg("case %d encoded: %s", i, json);
        ch_telemetry_free(&t);
    }
    struct ch_telemetry t;
    sample_telemetry(&t);
    t.readings[1].n_metrics = 0;
    assert_null(ch_telemetry_encode(&t));
    t.readings[1].n_metrics = 3;
    size_t n = t.n_readings;
    t.n_readings = 0;
    assert_null(ch_telemetry_encode(&t));
    t.n_readings = n;
    ch_telemetry_free(&t);

    for (int i = 0; i < 6; i++) {
        struct ch_status s;
        sample_status(&s);
        switch (i) {
        case 0:
            s.ts_ms = 0;
            break; /* a birth needs ts */
        case 1:
            s.version[0] = '\0';
            break; /* ... a version */
        case 2:
            s.boot_id[0] = '\0';
            break; /* ... and a boot id */
        case 3:
            strcpy(s.boot_id, "3F2A9C0D4B5E6F708192A3B4C5D6E7F8");
            break;
        case 4:
            strcpy(s.version, "1 0");
            break;
        case 5:
            strcpy(s.devices[1].bus, "");
            break;
        }
        assert_null(ch_status_encode(&s));
        ch_status_free(&s);
    }
}

/* ---- the shared examples ------------------------------------------------- */

/* Decodes every .json in schemas/examples and schemas/examples/bad with the decoder its name
 * starts with; the contract test runs the same files through the JSON Schemas. */
static void check_examples(const char *dir, bool want_ok)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    struct dirent *e;
    int seen = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        char err[256] = "";
        int rc;
        if (strncmp(e->d_name, "telemetry", 9) == 0) {
            struct ch_telemetry t;
            rc = ch_telemetry_decode(buf, n, &t, err, sizeof err);
            ch_telemetry_free(&t);
        } else if (strncmp(e->d_name, "status", 6) == 0) {
            struct ch_status s;
            rc = ch_status_decode(buf, n, &s, err, sizeof err);
            ch_status_free(&s);
        } else {
            continue;
        }
        if ((rc == 0) != want_ok)
            fail_msg("%s: want %s, got rc %d: %s", path, want_ok ? "valid" : "refused", rc, err);
        seen++;
    }
    closedir(d);
    assert_true(seen > 0);
}

static void test_examples(void **state)
{
    (void)state;
    const char *src = getenv("CAREHUB_SRC");
    if (!src)
        skip();
    char dir[512];
    snprintf(dir, sizeof dir, "%s/schemas/examples", src);
    check_examples(dir, true);
    snprintf(dir, sizeof dir, "%s/schemas/examples/bad", src);
    check_examples(dir, false);
}

/* ---- hostile input ----------------------------------------------------- */

/* Whatever a decoder accepts, the encoder can write again: the decoder never
 * lets through a value that breaks the contract. */
static void decode_any(const char *buf, size_t len)
{
    struct ch_telemetry t;
    struct ch_status s;
    char err[128];
    if (ch_telemetry_decode(buf, len, &t, err, sizeof err) == 0) {
        char *again = ch_telemetry_encode(&t);
        assert_non_null(again);
        free(again);
        ch_telemetry_free(&t);
    } else {
        assert_true(is_empty_telemetry(&t));
    }
    if (ch_status_decode(buf, len, &s, err, sizeof err) == 0) {
        char *again = ch_status_encode(&s);
        assert_non_null(again);
        free(again);
        ch_status_free(&s);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_hostile_input(void **state)
{
    (void)state;
    struct ch_telemetry t;
    sample_telemetry(&t);
    char *tel = ch_telemetry_encode(&t);
    ch_telemetry_free(&t);
    struct ch_status s;
    sample_status(&s);
    char *st = ch_status_encode(&s);
    ch_status_free(&s);

    const char *seeds[] = {tel, st};
    for (size_t k = 0; k < CH_ARRAY_LEN(seeds); k++) {
        size_t len = strlen(seeds[k]);
        char *buf = ch_xmalloc(len);
        /* every truncation, in a buffer of exactly that size (no NUL after it) */
        for (size_t cut = 0; cut < len; cut++) {
            memcpy(buf, seeds[k], cut);
            decode_any(buf, cut);
        }
        /* random byte changes */
        for (int round = 0; round < 20000; round++) {
            memcpy(buf, seeds[k], len);
            int flips = 1 + (int)(next_rand() % 4);
            for (int f = 0; f < flips; f++)
                buf[next_rand() % len] = (char)(next_rand() & 0xff);
            decode_any(buf, len);
        }
        free(buf);
    }
    /* pure noise, deep nesting, NUL bytes inside */
    char noise[512];
    for (int round = 0; round < 2000; round++) {
        size_t n = next_rand() % sizeof noise;
        for (size_t i = 0; i < n; i++)
            noise[i] = (char)(next_rand() & 0xff);
        decode_any(noise, n);
    }
    size_t deep = 100000;
    char *nest = ch_xmalloc(deep);
    memset(nest, '[', deep);
    decode_any(nest, deep);
    free(nest);
    static const char with_nul[] = "{\"schema\":\"carehub/telemetry/1\"\0,\"x\":1}";
    decode_any(with_nul, sizeof with_nul - 1);
    decode_any(NULL, 0);
    free(tel);
    free(st);
}

/* ---- topics ------------------------------------------------------------ */

static void test_topics(void **state)
{
    (void)state;
    char buf[256];
    assert_true(ch_topic(buf, sizeof buf, "cq-yz-001", "gw-01", "telemetry"));
    assert_string_equal(buf, "carehub/v1/cq-yz-001/gw-01/telemetry");
    assert_true(ch_topic(buf, sizeof buf, "s", "g", "cmd/ack"));
    assert_string_equal(buf, "carehub/v1/s/g/cmd/ack");
    assert_false(ch_topic(buf, 20, "cq-yz-001", "gw-01", "telemetry")); /* does not fit */
    assert_false(ch_topic(buf, sizeof buf, "a/b", "g", "status"));
    assert_false(ch_topic(buf, sizeof buf, "s", "+", "status"));
    assert_false(ch_topic(buf, sizeof buf, "s", "g", "#"));
    assert_false(ch_topic(buf, sizeof buf, "s", "g", ""));

    static const struct {
        const char *topic;
        const char *site, *gateway, *kind; /* NULL: refused */
    } cases[] = {
        {"carehub/v1/cq-yz-001/gw-01/telemetry", "cq-yz-001", "gw-01", "telemetry"},
        {"carehub/v1/s/g/status", "s", "g", "status"},
        {"carehub/v1/s/g/cmd/ack", "s", "g", "cmd/ack"},
        {"carehub/v1/s/g/", NULL, NULL, NULL},
        {"carehub/v1/s/g", NULL, NULL, NULL},
        {"carehub/v1/s//telemetry", NULL, NULL, NULL},
        {"carehub/v1//g/telemetry", NULL, NULL, NULL},
        {"carehub/v2/s/g/telemetry", NULL, NULL, NULL},
        {"xcarehub/v1/s/g/telemetry", NULL, NULL, NULL},
        {"carehub/v1/a b/g/telemetry", NULL, NULL, NULL},
        {"carehub/v1/.s/g/telemetry", NULL, NULL, NULL},
        {"carehub/v1/s/-g/telemetry", NULL, NULL, NULL},
        {"carehub/v1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/g/status",
         NULL, NULL, NULL},
        {"", NULL, NULL, NULL},
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(cases); i++) {
        char site[CH_ID_MAX], gw[CH_ID_MAX];
        const char *kind = NULL;
        bool ok = ch_topic_parse(cases[i].topic, site, gw, &kind);
        if (ok != (cases[i].site != NULL))
            fail_msg("%s: want %s", cases[i].topic, cases[i].site ? "parsed" : "refused");
        if (ok) {
            assert_string_equal(site, cases[i].site);
            assert_string_equal(gw, cases[i].gateway);
            assert_string_equal(kind, cases[i].kind);
        }
    }
}

static void test_quality_names(void **state)
{
    (void)state;
    assert_string_equal(ch_quality_name(CH_Q_GOOD), "good");
    assert_string_equal(ch_quality_name(CH_Q_UNCERTAIN), "uncertain");
    assert_string_equal(ch_quality_name(CH_Q_BAD), "bad");
    assert_string_equal(ch_quality_name((enum ch_quality)9), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_telemetry_roundtrip),
        cmocka_unit_test(test_telemetry_encode_exact),
        cmocka_unit_test(test_status_roundtrip),
        cmocka_unit_test(test_status_will),
        cmocka_unit_test(test_integral_reals),
        cmocka_unit_test(test_telemetry_rules),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_status_rules),
        cmocka_unit_test(test_small_err_buffer),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_quality_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
