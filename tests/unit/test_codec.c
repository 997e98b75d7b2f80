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

/* ---- alerts and commands ------------------------------------------------ */

/* The CO2 alarm of the nap room, raised, with every optional field set. */
static void sample_alert(struct ch_alert *a)
{
    memset(a, 0, sizeof *a);
    strcpy(a->site, "cq-yz-001");
    strcpy(a->gateway, "gw-01");
    strcpy(a->alarm_id, "co2-high:env-101");
    strcpy(a->rule, "co2-high");
    strcpy(a->device, "env-101");
    strcpy(a->room, "nap-1");
    strcpy(a->bed, "b.3");
    strcpy(a->resident, "r-7f3a9c01");
    a->priority = CH_PRIO_MEDIUM;
    a->state = CH_AS_UNACK;
    a->event = CH_AE_RAISE;
    a->escalation = 0;
    a->latched = false;
    strcpy(a->metric, "co2");
    a->has_value = true;
    a->value = 1250.5;
    strcpy(a->message, "午睡室 CO2 \"1250\" ppm \\ 超标");
    a->ts_ms = 1763850300000;
    a->raised_ms = 1763850300000;
    strcpy(a->group, "flood:gw-01");
}

static void assert_alert_equal(const struct ch_alert *a, const struct ch_alert *b)
{
    assert_string_equal(a->site, b->site);
    assert_string_equal(a->gateway, b->gateway);
    assert_string_equal(a->alarm_id, b->alarm_id);
    assert_string_equal(a->rule, b->rule);
    assert_string_equal(a->device, b->device);
    assert_string_equal(a->room, b->room);
    assert_string_equal(a->bed, b->bed);
    assert_string_equal(a->resident, b->resident);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->event, b->event);
    assert_int_equal(a->escalation, b->escalation);
    assert_int_equal(a->latched, b->latched);
    assert_string_equal(a->metric, b->metric);
    assert_int_equal(a->has_value, b->has_value);
    assert_true(!a->has_value || a->value == b->value); /* exactly: no rounding on the way */
    assert_string_equal(a->message, b->message);
    assert_true(a->ts_ms == b->ts_ms);
    assert_true(a->raised_ms == b->raised_ms);
    assert_true(a->acked_ms == b->acked_ms);
    assert_true(a->cleared_ms == b->cleared_ms);
    assert_true(a->shelved_until_ms == b->shelved_until_ms);
    assert_string_equal(a->by, b->by);
    assert_string_equal(a->group, b->group);
}

static bool is_empty_alert(const struct ch_alert *a)
{
    static const struct ch_alert zero;
    return memcmp(a, &zero, sizeof zero) == 0;
}

/* One alert per transition kind, each a consistent story. */
static void alert_for(struct ch_alert *a, int event)
{
    sample_alert(a);
    a->event = event;
    switch (event) {
    case CH_AE_RAISE:
        break;
    case CH_AE_ACK:
        a->state = CH_AS_ACKED;
        a->acked_ms = a->ts_ms = 1763850400000;
        strcpy(a->by, "console:王护士");
        break;
    case CH_AE_CLEAR:
        a->state = CH_AS_NORMAL;
        a->acked_ms = 1763850400000;
        a->cleared_ms = a->ts_ms = 1763850500000;
        break;
    case CH_AE_RTN:
        a->state = CH_AS_RTN_UNACK;
        a->cleared_ms = a->ts_ms = 1763850500000;
        break;
    case CH_AE_ESCALATE:
        a->escalation = 2;
        a->ts_ms = 1763850900000;
        break;
    case CH_AE_SHELVE:
        a->state = CH_AS_SHELVED;
        a->raised_ms = 0;
        a->shelved_until_ms = 1763853900000;
        strcpy(a->by, "hub:operator7");
        break;
    case CH_AE_UNSHELVE:
    case CH_AE_IN_SERVICE:
        a->state = CH_AS_NORMAL;
        a->raised_ms = 0;
        break;
    case CH_AE_OUT_OF_SERVICE:
        a->state = CH_AS_OOS;
        a->raised_ms = 0;
        a->has_value = false;
        a->metric[0] = '\0';
        break;
    case CH_AE_FLOOD:
    case CH_AE_FLOOD_END:
        strcpy(a->alarm_id, "flood:gw-01");
        strcpy(a->rule, "flood");
        strcpy(a->device, "gw-01");
        a->room[0] = a->bed[0] = a->resident[0] = a->metric[0] = a->group[0] = '\0';
        a->priority = CH_PRIO_HIGH;
        a->value = 11;
        if (event == CH_AE_FLOOD_END) {
            a->state = CH_AS_NORMAL;
            a->cleared_ms = a->ts_ms;
        }
        break;
    }
}

static void test_alert_roundtrip(void **state)
{
    (void)state;
    for (int ev = CH_AE_RAISE; ev <= CH_AE_FLOOD_END; ev++) {
        struct ch_alert a, back;
        alert_for(&a, ev);
        char *json = ch_alert_encode(&a);
        if (!json)
            fail_msg("event %s does not encode", ch_alarm_event_name(ev));
        char err[256] = "";
        if (ch_alert_decode(json, strlen(json), &back, err, sizeof err) != 0)
            fail_msg("event %s: %s: %s", ch_alarm_event_name(ev), json, err);
        assert_alert_equal(&a, &back);
        char *again = ch_alert_encode(&back);
        assert_string_equal(json, again);
        free(json);
        free(again);
    }
    /* values that need 16 or 17 digits come back exactly */
    static const double values[] = {0.1 + 0.2, 1.0 / 3.0, 9007199254740993.0, 5e-324, -0.0015};
    for (size_t i = 0; i < CH_ARRAY_LEN(values); i++) {
        struct ch_alert a, back;
        sample_alert(&a);
        a.value = values[i];
        char *json = ch_alert_encode(&a);
        char err[128] = "";
        assert_int_equal(ch_alert_decode(json, strlen(json), &back, err, sizeof err), 0);
        if (back.value != values[i])
            fail_msg("%.17g came back as %.17g (%s)", values[i], back.value, json);
        free(json);
    }
}

/* The exact text: keys in contract order, optional fields only when set. */
static void test_alert_encode_exact(void **state)
{
    (void)state;
    struct ch_alert a;
    alert_for(&a, CH_AE_ACK);
    char *json = ch_alert_encode(&a);
    assert_string_equal(
        json, "{\"schema\":\"carehub/alert/1\",\"site\":\"cq-yz-001\",\"gateway\":\"gw-01\","
              "\"alarm_id\":\"co2-high:env-101\",\"rule\":\"co2-high\",\"device\":\"env-101\","
              "\"room\":\"nap-1\",\"bed\":\"b.3\",\"resident\":\"r-7f3a9c01\","
              "\"priority\":\"medium\",\"state\":\"acked\",\"event\":\"ack\",\"escalation\":0,"
              "\"latched\":false,\"metric\":\"co2\",\"value\":1250.5,\"message\":"
              "\"午睡室 CO2 \\\"1250\\\" ppm \\\\ 超标\",\"ts_ms\":1763850400000,"
              "\"raised_ms\":1763850300000,\"acked_ms\":1763850400000,"
              "\"by\":\"console:王护士\",\"group\":\"flood:gw-01\"}");
    free(json);

    /* the least an alert says: a stale-data alarm with no room, value or text */
    struct ch_alert m = {.priority = CH_PRIO_LOW,
                         .state = CH_AS_UNACK,
                         .event = CH_AE_RAISE,
                         .ts_ms = 5,
                         .raised_ms = 5,
                         .value = 99 /* ignored: no has_value */};
    strcpy(m.site, "s");
    strcpy(m.gateway, "g");
    strcpy(m.alarm_id, "stale:band-17");
    strcpy(m.rule, "stale");
    strcpy(m.device, "band-17");
    json = ch_alert_encode(&m);
    assert_string_equal(json, "{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\","
                              "\"alarm_id\":\"stale:band-17\",\"rule\":\"stale\",\"device\":"
                              "\"band-17\",\"priority\":\"low\",\"state\":\"unack\",\"event\":"
                              "\"raise\",\"escalation\":0,\"latched\":false,\"ts_ms\":5,"
                              "\"raised_ms\":5}");
    struct ch_alert back;
    char err[128];
    assert_int_equal(ch_alert_decode(json, strlen(json), &back, err, sizeof err), 0);
    assert_false(back.has_value);
    assert_true(back.value == 0);
    free(json);
}

/* Empty optional strings on the wire mean the same as absent ones. */
static void test_alert_empty_optionals(void **state)
{
    (void)state;
    const char *p = "{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\","
                    "\"alarm_id\":\"r:d\",\"rule\":\"r\",\"device\":\"d\",\"room\":\"\","
                    "\"bed\":\"\",\"resident\":\"\",\"priority\":\"high\",\"state\":\"unack\","
                    "\"event\":\"raise\",\"escalation\":0.0,\"latched\":true,\"metric\":\"\","
                    "\"value\":3,\"message\":\"\",\"ts_ms\":5.0,\"raised_ms\":5,\"by\":\"\","
                    "\"group\":\"\"}";
    struct ch_alert a;
    char err[128] = "";
    assert_int_equal(ch_alert_decode(p, strlen(p), &a, err, sizeof err), 0);
    assert_string_equal(a.room, "");
    assert_true(a.has_value && a.value == 3.0);
    assert_true(a.latched);
    assert_true(a.ts_ms == 5);
    char *json = ch_alert_encode(&a);
    assert_null(strstr(json, "\"room\""));
    assert_null(strstr(json, "\"group\""));
    free(json);
}

#define AL_HEAD                                                                                    \
    "\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","        \
    "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"high\",\"escalation\":0,\"latched\":false"
/* a raise, complete but for what the case adds */
#define RAISE(extra)                                                                               \
    "{" AL_HEAD ",\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":5,\"raised_ms\":5" extra "}"
/* state and event given, no times but ts_ms */
#define TRANS(st, ev, extra)                                                                       \
    "{" AL_HEAD ",\"state\":\"" st "\",\"event\":\"" ev "\",\"ts_ms\":9" extra "}"
#define FLOODHEAD                                                                                  \
    "\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"priority\":\"high\","       \
    "\"escalation\":0,\"latched\":false,\"ts_ms\":5,\"raised_ms\":5"

static const struct bad_case bad_alerts[] = {
    {"", "not JSON"},
    {RAISE(",\"state\":\"acked\""), "not JSON"}, /* duplicate key */
    {"[]", "payload: not a JSON object"},
    {RAISE(",\"resident_full_name\":\"x\""), "resident_full_name: unknown key"},
    {RAISE(",\"room_name\":\" 301\""), "room_name: ' 301' is not a name"},
    {RAISE(",\"room_name\":\"3\\u0085\""), "room_name: "},
    {RAISE(",\"kind\":\"s o s\""), "kind: "},
    {RAISE(",\"located_ms\":0"), "located_ms: not an integer"},
    {"{\"schema\":\"carehub/telemetry/1\"}", "schema: 'carehub/telemetry/1' is not"},
    {"{\"schema\":\"carehub/alert/1\",\"gateway\":\"g\"}", "site: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g g\"}",
     "gateway: 'g g' is not an identifier"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\"}", "alarm_id: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":7}",
     "alarm_id: not a string"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"rd\"}",
     "alarm_id: 'rd' is not rule:device"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d:e\"}",
     "alarm_id: 'r:d:e' is not rule:device"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\":d\"}",
     "alarm_id: ':d' is not rule:device"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:-d\"}",
     "alarm_id: 'r:-d' is not rule:device"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\"}",
     "rule: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\"}",
     "device: missing"},
    {RAISE(",\"room\":\"room 1\""), "room: 'room 1' is not an identifier"},
    {RAISE(",\"bed\":3"), "bed: not a string"},
    {RAISE(",\"resident\":\"张三\""), "resident: '张三' is not an identifier"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\"}",
     "priority: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"critical\"}",
     "priority: 'critical' is not one of low, medium, high"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"active\"}",
     "state: 'active' is not one of normal, unack, acked, rtn_unack, shelved, out_of_service"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":1}",
     "event: not a string"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"trip\"}",
     "event: 'trip' is not one of raise, ack, clear, rtn, escalate"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":"
     "\"raise\"}",
     "escalation: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
     "\"escalation\":-1}",
     "escalation: not an integer in 0..100"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
     "\"escalation\":101}",
     "escalation: not an integer in 0..100"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
     "\"escalation\":\"1\"}",
     "escalation: not an integer"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
     "\"escalation\":0}",
     "latched: missing"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
     "\"escalation\":0,\"latched\":0}",
     "latched: not a boolean"},
    {RAISE(",\"metric\":\"co 2\""), "metric: 'co 2' is not an identifier"},
    {RAISE(",\"metric\":\"seq\""), "metric: 'seq' is not a metric name"},
    {RAISE(",\"metric\":\"_v\""), "metric: '_v' is not a metric name"},
    {RAISE(",\"value\":\"1\""), "value: not a finite number"},
    {RAISE(",\"value\":null"), "value: not a finite number"},
    {RAISE(",\"value\":1e999"), "not JSON"},
    {RAISE(",\"message\":7"), "message: not a string"},
    {RAISE(",\"message\":\"a\\nb\""), "message: 'a?b' is not text of at most 255 bytes"},
    {RAISE(",\"message\":\"del\\u007f\""), "message: 'del?' is not text"},
    {RAISE(",\"message\":\"\\ud800\""), "not JSON"}, /* a lone surrogate is not UTF-8 */
    {"{" AL_HEAD ",\"state\":\"unack\",\"event\":\"raise\",\"raised_ms\":5}", "ts_ms: missing"},
    {"{" AL_HEAD ",\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":0,\"raised_ms\":5}",
     "ts_ms: not an integer in 1..9223372036854"},
    {"{" AL_HEAD ",\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":1.5,\"raised_ms\":5}",
     "ts_ms: not an integer"},
    {"{" AL_HEAD ",\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":5,\"raised_ms\":0}",
     "raised_ms: not an integer in 1.."},
    {RAISE(",\"acked_ms\":-1"), "acked_ms: not an integer"},
    {RAISE(",\"cleared_ms\":\"5\""), "cleared_ms: not an integer"},
    {RAISE(",\"shelved_until_ms\":9223372036855"), "shelved_until_ms: not an integer"},
    {RAISE(",\"by\":\"nurse\\t1\""), "by: 'nurse?1' is not text of at most 64 bytes"},
    {RAISE(",\"by\":\"" /* 65 bytes */
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""),
     "by: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' is not text"},
    {RAISE(",\"group\":\"flood\""), "group: 'flood' is not rule:device"},
    {RAISE(",\"group\":5"), "group: not a string"},
    /* the story across fields */
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"r:e\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"high\",\"escalation\":0,\"latched\":false,"
     "\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":5,\"raised_ms\":5}",
     "alarm_id: 'r:e' is not rule:device ('r:d')"},
    {"{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\",\"alarm_id\":\"rr:d\","
     "\"rule\":\"r\",\"device\":\"d\",\"priority\":\"high\",\"escalation\":0,\"latched\":false,"
     "\"state\":\"unack\",\"event\":\"raise\",\"ts_ms\":5,\"raised_ms\":5}",
     "alarm_id: 'rr:d' is not rule:device ('r:d')"},
    {"{" FLOODHEAD ",\"alarm_id\":\"flood:h\",\"rule\":\"flood\",\"device\":\"h\","
     "\"state\":\"unack\",\"event\":\"flood\"}",
     "device: 'h' is not the gateway"},
    {"{" FLOODHEAD ",\"alarm_id\":\"r:d\",\"rule\":\"r\",\"device\":\"d\","
     "\"state\":\"unack\",\"event\":\"flood\"}",
     "rule: event 'flood' belongs to the flood alarm"},
    {RAISE(",\"acked_ms\":6") /* fine so far */ "x", "not JSON"},
    {TRANS("acked", "raise", ",\"raised_ms\":5,\"acked_ms\":9"),
     "state: 'acked' cannot follow event 'raise'"},
    {TRANS("unack", "ack", ",\"raised_ms\":5,\"acked_ms\":9"),
     "state: 'unack' cannot follow event 'ack'"},
    {TRANS("acked", "clear", ",\"raised_ms\":5,\"acked_ms\":9,\"cleared_ms\":9"),
     "state: 'acked' cannot follow event 'clear'"},
    {TRANS("normal", "rtn", ",\"cleared_ms\":9"), "state: 'normal' cannot follow event 'rtn'"},
    {TRANS("acked", "escalate", ",\"raised_ms\":5,\"acked_ms\":9"),
     "state: 'acked' cannot follow event 'escalate'"},
    {TRANS("unack", "shelve", ",\"raised_ms\":5"), "state: 'unack' cannot follow event 'shelve'"},
    {TRANS("shelved", "unshelve", ",\"shelved_until_ms\":9"),
     "state: 'shelved' cannot follow event 'unshelve'"},
    {TRANS("normal", "out_of_service", ""), "state: 'normal' cannot follow event 'out_of_service'"},
    {TRANS("out_of_service", "in_service", ""),
     "state: 'out_of_service' cannot follow event 'in_service'"},
    {"{" FLOODHEAD ",\"alarm_id\":\"flood:g\",\"rule\":\"flood\",\"device\":\"g\","
     "\"state\":\"normal\",\"event\":\"flood\"}",
     "state: 'normal' cannot follow event 'flood'"},
    {"{" FLOODHEAD ",\"alarm_id\":\"flood:g\",\"rule\":\"flood\",\"device\":\"g\","
     "\"state\":\"unack\",\"event\":\"flood_end\"}",
     "state: 'unack' cannot follow event 'flood_end'"},
    {TRANS("unack", "escalate", ",\"raised_ms\":5"), "escalation: must be at least 1"},
    {TRANS("shelved", "shelve", ""), "shelved_until_ms: missing for state 'shelved'"},
    {RAISE(",\"shelved_until_ms\":99"), "shelved_until_ms: only for state 'shelved'"},
    {TRANS("unack", "raise", ""), "raised_ms: missing for state 'unack'"},
    {TRANS("rtn_unack", "rtn", ",\"cleared_ms\":9"), "raised_ms: missing for state 'rtn_unack'"},
    {TRANS("acked", "ack", ",\"raised_ms\":5"), "acked_ms: missing for event 'ack'"},
    {TRANS("acked", "unshelve", ",\"raised_ms\":5"), "acked_ms: missing for state 'acked'"},
    {TRANS("rtn_unack", "rtn", ",\"raised_ms\":5"), "cleared_ms: missing for state 'rtn_unack'"},
    {TRANS("normal", "clear", ",\"raised_ms\":5,\"acked_ms\":9"),
     "cleared_ms: missing for event 'clear'"},
};

static void test_alert_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < CH_ARRAY_LEN(bad_alerts); i++) {
        const struct bad_case *c = &bad_alerts[i];
        struct ch_alert a;
        memset(&a, 0x5a, sizeof a); /* must come back all zero */
        char err[256] = "";
        int rc = ch_alert_decode(c->payload, strlen(c->payload), &a, err, sizeof err);
        if (rc != CH_EINVAL || !strstr(err, c->error))
            fail_msg("case %zu: %s\n  want '%s'\n  got rc %d and '%s'", i, c->payload, c->error, rc,
                     err);
        assert_true(is_empty_alert(&a));
    }
}

/* Every transition the contract allows decodes (the table in codec.h), and
 * the longest fields fit. */
static void test_alert_limits(void **state)
{
    (void)state;
    struct ch_alert a, back;
    sample_alert(&a);
    char id[CH_ID_MAX];
    memset(id, 'r', CH_ID_MAX - 1);
    id[CH_ID_MAX - 1] = '\0';
    strcpy(a.rule, id);
    memset(id, 'd', CH_ID_MAX - 1);
    strcpy(a.device, id);
    snprintf(a.alarm_id, sizeof a.alarm_id, "%s:%s", a.rule, a.device);
    assert_int_equal(strlen(a.alarm_id), CH_ALARM_ID_MAX - 1);
    /* 85 three-byte characters: 255 bytes */
    a.message[0] = '\0';
    for (int i = 0; i < 85; i++)
        strcat(a.message, "超");
    assert_int_equal(strlen(a.message), CH_TEXT_MAX - 1);
    memset(a.by, 'b', CH_ID_MAX - 1);
    a.by[CH_ID_MAX - 1] = '\0';
    a.escalation = CH_ESCALATION_MAX;
    a.event = CH_AE_ESCALATE;
    a.ts_ms = INT64_C(9223372036854);
    a.value = -1.7976931348623157e308; /* 15 digits would overflow: 17 are written */
    char *json = ch_alert_encode(&a);
    assert_non_null(json);
    char err[256] = "";
    assert_int_equal(ch_alert_decode(json, strlen(json), &back, err, sizeof err), 0);
    assert_alert_equal(&a, &back);
    free(json);

    /* one byte more in the message: 254 + a 2-byte character */
    char *big = ch_xmalloc(1024);
    char msg[300];
    memset(msg, 'x', 254);
    strcpy(msg + 254, "é");
    snprintf(big, 1024, RAISE(",\"message\":\"%s\""), msg);
    struct ch_alert x;
    assert_int_equal(ch_alert_decode(big, strlen(big), &x, err, sizeof err), CH_EINVAL);
    assert_non_null(strstr(err, "message: "));
    assert_true(is_empty_alert(&x));
    /* the encoder cannot be given it: a.message holds 255 bytes at most,
     * and a message not terminated within them is refused */
    memset(a.message, 'x', sizeof a.message);
    assert_null(ch_alert_encode(&a));
    free(big);

    /* every state an event may lead to, per the table */
    static const struct {
        int event;
        unsigned states;
    } allowed[] = {
        {CH_AE_RAISE, 1u << CH_AS_UNACK},
        {CH_AE_ACK, 1u << CH_AS_ACKED | 1u << CH_AS_NORMAL},
        {CH_AE_CLEAR, 1u << CH_AS_NORMAL},
        {CH_AE_RTN, 1u << CH_AS_RTN_UNACK},
        {CH_AE_ESCALATE, 1u << CH_AS_UNACK | 1u << CH_AS_RTN_UNACK},
        {CH_AE_SHELVE, 1u << CH_AS_SHELVED},
        {CH_AE_UNSHELVE,
         1u << CH_AS_NORMAL | 1u << CH_AS_UNACK | 1u << CH_AS_ACKED | 1u << CH_AS_RTN_UNACK},
        {CH_AE_OUT_OF_SERVICE, 1u << CH_AS_OOS},
        {CH_AE_IN_SERVICE,
         1u << CH_AS_NORMAL | 1u << CH_AS_UNACK | 1u << CH_AS_ACKED | 1u << CH_AS_RTN_UNACK},
        {CH_AE_FLOOD, 1u << CH_AS_UNACK | 1u << CH_AS_ACKED},
        {CH_AE_FLOOD_END, 1u << CH_AS_NORMAL | 1u << CH_AS_RTN_UNACK},
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(allowed); i++) {
        for (int st = CH_AS_NORMAL; st <= CH_AS_OOS; st++) {
            alert_for(&a, allowed[i].event);
            a.state = st;
            /* every time the state could want, none it must not have */
            a.raised_ms = 1;
            a.acked_ms = 2;
            a.cleared_ms = 3;
            a.escalation = 1;
            a.shelved_until_ms = st == CH_AS_SHELVED ? 4 : 0;
            json = ch_alert_encode(&a);
            bool want = allowed[i].states & (1u << st);
            if ((json != NULL) != want)
                fail_msg("event %s, state %s: want %s", ch_alarm_event_name(allowed[i].event),
                         ch_alarm_state_name(st), want ? "encoded" : "refused");
            free(json);
        }
    }
}

static void test_alert_encode_refuses(void **state)
{
    (void)state;
    enum { N = 26 };
    for (int i = 0; i < N; i++) {
        struct ch_alert a;
        sample_alert(&a);
        switch (i) {
        case 0:
            strcpy(a.site, "a b");
            break;
        case 1:
            strcpy(a.alarm_id, "co2-high:env-102");
            break;
        case 2:
            strcpy(a.rule, "co2 high");
            break;
        case 3:
            a.device[0] = '\0';
            break;
        case 4:
            strcpy(a.room, "a,b");
            break;
        case 5:
            a.priority = 3;
            break;
        case 6:
            a.state = -1;
            break;
        case 7:
            a.event = CH_AE_FLOOD_END + 1;
            break;
        case 8:
            a.escalation = CH_ESCALATION_MAX + 1;
            break;
        case 9:
            a.value = NAN;
            break;
        case 10:
            strcpy(a.metric, "time");
            break;
        case 11:
            strcpy(a.message, "two\nlines");
            break;
        case 12:
            strcpy(a.message, "\xff\xfe"); /* not UTF-8 */
            break;
        case 13:
            memset(a.message, 'm', sizeof a.message); /* not terminated */
            break;
        case 14:
            a.ts_ms = 0;
            break;
        case 15:
            a.raised_ms = -1;
            break;
        case 16:
            a.acked_ms = INT64_C(9223372036855);
            break;
        case 17:
            strcpy(a.by, "nurse\x01");
            break;
        case 18:
            strcpy(a.group, "flood");
            break;
        case 19:
            a.state = CH_AS_ACKED; /* raise -> acked */
            a.acked_ms = 9;
            break;
        case 20:
            a.raised_ms = 0;
            break;
        case 21:
            a.shelved_until_ms = 9;
            break;
        case 22:
            a.event = CH_AE_FLOOD;
            break;
        case 23:
            strcpy(a.rule, "flood");
            strcpy(a.alarm_id, "flood:env-101");
            break;
        case 24:
            memset(a.alarm_id, 'a', sizeof a.alarm_id); /* not terminated */
            break;
        case 25:
            a.value = INFINITY;
            break;
        }
        char *json = ch_alert_encode(&a);
        if (json)
            fail_msg("case %d encoded: %s", i, json);
    }
    /* a value without has_value is not looked at */
    struct ch_alert a;
    sample_alert(&a);
    a.has_value = false;
    a.value = NAN;
    char *json = ch_alert_encode(&a);
    assert_non_null(json);
    assert_null(strstr(json, "\"value\""));
    free(json);
}

static void test_command_roundtrip(void **state)
{
    (void)state;
    for (int act = CH_CMD_ACK; act <= CH_CMD_IN_SERVICE; act++) {
        struct ch_command c = {.action = act, .ts_ms = 1763850400000}, back;
        strcpy(c.alarm_id, "sos:btn-203-1");
        strcpy(c.by, "console:王护士");
        if (act == CH_CMD_SHELVE)
            c.duration_ms = CH_SHELVE_MAX_MS;
        char *json = ch_command_encode(&c);
        assert_non_null(json);
        char err[256] = "";
        if (ch_command_decode(json, strlen(json), &back, err, sizeof err) != 0)
            fail_msg("%s: %s", json, err);
        assert_int_equal(back.action, act);
        assert_string_equal(back.alarm_id, c.alarm_id);
        assert_string_equal(back.by, c.by);
        assert_true(back.ts_ms == c.ts_ms);
        assert_true(back.duration_ms == c.duration_ms);
        char *again = ch_command_encode(&back);
        assert_string_equal(json, again);
        free(json);
        free(again);
    }
    struct ch_command c = {.action = CH_CMD_SHELVE, .ts_ms = 5, .duration_ms = 3600000};
    strcpy(c.alarm_id, "r:d");
    strcpy(c.by, "hub:op");
    char *json = ch_command_encode(&c);
    assert_string_equal(json, "{\"schema\":\"carehub/command/1\",\"action\":\"shelve\","
                              "\"alarm_id\":\"r:d\",\"by\":\"hub:op\",\"ts_ms\":5,"
                              "\"duration_ms\":3600000}");
    free(json);
}

#define CMD(extra) "{\"schema\":\"carehub/command/1\"" extra "}"
#define CMD_OK     ",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":\"hub:op\",\"ts_ms\":5"

static const struct bad_case bad_commands[] = {
    {"{", "not JSON"},
    {"\"ack\"", "payload: not a JSON object"},
    {CMD(CMD_OK ",\"why\":1"), "why: unknown key"},
    {"{\"schema\":\"carehub/alert/1\"}", "schema: 'carehub/alert/1' is not"},
    {CMD(""), "action: missing"},
    {CMD(",\"action\":\"silence\""),
     "action: 'silence' is not one of ack, shelve, unshelve, out_of_service, in_service"},
    {CMD(",\"action\":\"cmd/ack\""), "action: 'cmd/ack' is not one of"},
    {CMD(",\"action\":\"ack\""), "alarm_id: missing"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r\""), "alarm_id: 'r' is not rule:device"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\""), "by: missing"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":\"\""), "by: must not be empty"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":1"), "by: not a string"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":\"a\\nb\""), "by: 'a?b' is not text"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":\"x\""), "ts_ms: missing"},
    {CMD(",\"action\":\"ack\",\"alarm_id\":\"r:d\",\"by\":\"x\",\"ts_ms\":-5"),
     "ts_ms: not an integer"},
    {CMD(CMD_OK ",\"duration_ms\":1000"), "duration_ms: only for action 'shelve'"},
    {CMD(",\"action\":\"shelve\",\"alarm_id\":\"r:d\",\"by\":\"x\",\"ts_ms\":5"),
     "duration_ms: missing"},
    {CMD(",\"action\":\"shelve\",\"alarm_id\":\"r:d\",\"by\":\"x\",\"ts_ms\":5,\"duration_ms\":0"),
     "duration_ms: not an integer in 1..604800000"},
    {CMD(",\"action\":\"shelve\",\"alarm_id\":\"r:d\",\"by\":\"x\",\"ts_ms\":5,"
         "\"duration_ms\":604800001"),
     "duration_ms: not an integer in 1..604800000"},
    {CMD(",\"action\":\"shelve\",\"alarm_id\":\"r:d\",\"by\":\"x\",\"ts_ms\":5,"
         "\"duration_ms\":\"1h\""),
     "duration_ms: not an integer"},
};

static void test_command_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < CH_ARRAY_LEN(bad_commands); i++) {
        const struct bad_case *c = &bad_commands[i];
        struct ch_command cmd;
        memset(&cmd, 0x5a, sizeof cmd);
        char err[256] = "";
        int rc = ch_command_decode(c->payload, strlen(c->payload), &cmd, err, sizeof err);
        if (rc != CH_EINVAL || !strstr(err, c->error))
            fail_msg("case %zu: %s\n  want '%s'\n  got rc %d and '%s'", i, c->payload, c->error, rc,
                     err);
        static const struct ch_command zero;
        assert_memory_equal(&cmd, &zero, sizeof zero);
    }
    /* the encoder refuses the same */
    for (int i = 0; i < 8; i++) {
        struct ch_command c = {.action = CH_CMD_SHELVE, .ts_ms = 5, .duration_ms = 1000};
        strcpy(c.alarm_id, "r:d");
        strcpy(c.by, "x");
        switch (i) {
        case 0:
            c.action = 5;
            break;
        case 1:
            c.duration_ms = 0;
            break;
        case 2:
            c.duration_ms = CH_SHELVE_MAX_MS + 1;
            break;
        case 3:
            c.action = CH_CMD_ACK; /* with a duration */
            break;
        case 4:
            c.by[0] = '\0';
            break;
        case 5:
            strcpy(c.alarm_id, "r:");
            break;
        case 6:
            c.ts_ms = 0;
            break;
        case 7:
            c.action = -1;
            break;
        }
        char *json = ch_command_encode(&c);
        if (json)
            fail_msg("case %d encoded: %s", i, json);
    }
}

static void test_alarm_names(void **state)
{
    (void)state;
    assert_string_equal(ch_priority_name(CH_PRIO_LOW), "low");
    assert_string_equal(ch_priority_name(CH_PRIO_HIGH), "high");
    assert_string_equal(ch_priority_name(3), "?");
    assert_string_equal(ch_priority_name(-1), "?");
    assert_string_equal(ch_alarm_state_name(CH_AS_RTN_UNACK), "rtn_unack");
    assert_string_equal(ch_alarm_state_name(CH_AS_OOS), "out_of_service");
    assert_string_equal(ch_alarm_state_name(6), "?");
    assert_string_equal(ch_alarm_event_name(CH_AE_RAISE), "raise");
    assert_string_equal(ch_alarm_event_name(CH_AE_FLOOD_END), "flood_end");
    assert_string_equal(ch_alarm_event_name(CH_AE_NOTIFIED), "notified");
    assert_string_equal(ch_alarm_event_name(12), "?");
    assert_string_equal(ch_command_action_name(CH_CMD_OUT_OF_SERVICE), "out_of_service");
    assert_string_equal(ch_command_action_name(5), "?");

    static const struct {
        const char *name;
        int want;
    } parse[] = {
        {"cmd/ack", CH_CMD_ACK},
        {"cmd/shelve", CH_CMD_SHELVE},
        {"cmd/unshelve", CH_CMD_UNSHELVE},
        {"cmd/out_of_service", CH_CMD_OUT_OF_SERVICE},
        {"cmd/in_service", CH_CMD_IN_SERVICE},
        {"ack", CH_CMD_ACK},
        {"in_service", CH_CMD_IN_SERVICE},
        {"cmd/", -1},
        {"cmd", -1},
        {"cmd/ack/x", -1},
        {"cmd/ACK", -1},
        {"cmd/rebirth", -1},
        {"telemetry", -1},
        {"", -1},
        {NULL, -1},
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(parse); i++)
        if (ch_command_action_parse(parse[i].name) != parse[i].want)
            fail_msg("%s: want %d", parse[i].name ? parse[i].name : "NULL", parse[i].want);
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
    unsigned kinds = 0; /* telemetry, status, alert, command, ack */
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
            kinds |= 1;
        } else if (strncmp(e->d_name, "status", 6) == 0) {
            struct ch_status s;
            rc = ch_status_decode(buf, n, &s, err, sizeof err);
            ch_status_free(&s);
            kinds |= 2;
        } else if (strncmp(e->d_name, "alert", 5) == 0) {
            struct ch_alert a;
            rc = ch_alert_decode(buf, n, &a, err, sizeof err);
            kinds |= 4;
            /* what is accepted can be written again, and reads back the same */
            char *again = rc == 0 ? ch_alert_encode(&a) : NULL;
            if (rc == 0 && !again)
                fail_msg("%s: decoded but does not encode", path);
            free(again);
        } else if (strncmp(e->d_name, "command", 7) == 0) {
            struct ch_command c;
            rc = ch_command_decode(buf, n, &c, err, sizeof err);
            kinds |= 8;
            char *again = rc == 0 ? ch_command_encode(&c) : NULL;
            if (rc == 0 && !again)
                fail_msg("%s: decoded but does not encode", path);
            free(again);
        } else if (strncmp(e->d_name, "ack", 3) == 0) {
            struct ch_ack a;
            rc = ch_ack_decode(buf, n, &a, err, sizeof err);
            kinds |= 16;
            char *again = rc == 0 ? ch_ack_encode(&a) : NULL;
            if (rc == 0 && !again)
                fail_msg("%s: decoded but does not encode", path);
            free(again);
        } else {
            continue;
        }
        if ((rc == 0) != want_ok)
            fail_msg("%s: want %s, got rc %d: %s", path, want_ok ? "valid" : "refused", rc, err);
        seen++;
    }
    closedir(d);
    assert_true(seen > 0);
    if (kinds != 0x1f)
        fail_msg("%s: examples of every payload kind wanted, got mask %#x", dir, kinds);
}

/* ---- numbers and acknowledgements ------------------------------------- */

static void test_numbered(void **state)
{
    (void)state;
    static const char alert[] =
        "{\"schema\":\"carehub/alert/1\",\"site\":\"s1\",\"gateway\":\"g1\","
        "\"alarm_id\":\"sos:b1\",\"rule\":\"sos\",\"device\":\"b1\","
        "\"priority\":\"high\",\"state\":\"unack\",\"event\":\"raise\","
        "\"escalation\":0,\"latched\":true,\"ts_ms\":1763850300000,"
        "\"raised_ms\":1763850300000}";
    char *n = ch_alert_numbered(alert, strlen(alert), 7, 3);
    assert_non_null(n);
    struct ch_alert a;
    char err[256];
    assert_int_equal(ch_alert_decode(n, strlen(n), &a, err, sizeof err), 0);
    assert_true(a.seq == 7 && a.oldest == 3);
    free(n);
    /* an unnumbered alert stays as it was; zeros are left out */
    n = ch_alert_numbered(alert, strlen(alert), 0, 0);
    assert_string_equal(n, alert);
    free(n);
    /* both sides of the limit */
    n = ch_alert_numbered(alert, strlen(alert), CH_NUMBER_MAX, 1);
    assert_int_equal(ch_alert_decode(n, strlen(n), &a, err, sizeof err), 0);
    assert_true(a.seq == CH_NUMBER_MAX);
    free(n);
    assert_null(ch_alert_numbered(alert, strlen(alert), CH_NUMBER_MAX + 1, 1));
    assert_null(ch_alert_numbered("[1]", 3, 1, 1));
    /* an empty object gets no stray comma */
    n = ch_alert_numbered(" {}", 3, 1, 0);
    assert_string_equal(n, "{\"seq\":1}");
    free(n);

    struct ch_status st = {.site = "s1",
                           .gateway = "g1",
                           .online = true,
                           .ts_ms = 1763850300000,
                           .version = "1.0",
                           .boot_id = "3f2a9c0d4b5e6f708192a3b4c5d6e7f8"};
    char *birth = ch_status_encode(&st);
    n = ch_status_numbered(birth, strlen(birth), 1201, 17);
    struct ch_status back;
    assert_int_equal(ch_status_decode(n, strlen(n), &back, err, sizeof err), 0);
    assert_true(back.oldest_reading == 1201 && back.oldest_alert == 17);
    ch_status_free(&back);
    free(n);
    free(birth);

    /* a telemetry envelope says its oldest number, or nothing */
    static const char arr[] = "[{\"device\":\"d\",\"measurement\":\"m\",\"ts\":1763850300000,"
                              "\"quality\":\"good\",\"metrics\":{\"x\":1}}]";
    char *t = ch_telemetry_wrap("s1", "g1", 10, 1763850300000, false, 4, arr, strlen(arr));
    struct ch_telemetry tm;
    assert_int_equal(ch_telemetry_decode(t, strlen(t), &tm, err, sizeof err), 0);
    assert_true(tm.oldest == 4 && tm.seq == 10);
    ch_telemetry_free(&tm);
    free(t);
}

static void test_ack(void **state)
{
    (void)state;
    struct ch_ack a = {.site = "s1", .gateway = "g1", .hub = "hub-a", .ts_ms = 1763850300000};
    a.n_readings = CH_ACK_MAX_RANGES;
    for (size_t i = 0; i < a.n_readings; i++)
        a.readings[i] = (struct ch_range){10 * i + 1, 10 * i + 5};
    a.n_alerts = 1;
    a.alerts[0] = (struct ch_range){CH_NUMBER_MAX, CH_NUMBER_MAX};
    char *j = ch_ack_encode(&a);
    assert_non_null(j);
    struct ch_ack b;
    char err[256];
    assert_int_equal(ch_ack_decode(j, strlen(j), &b, err, sizeof err), 0);
    assert_int_equal(b.n_readings, CH_ACK_MAX_RANGES);
    assert_true(b.readings[63].lo == 631 && b.readings[63].hi == 635);
    assert_true(b.alerts[0].lo == CH_NUMBER_MAX);
    assert_string_equal(b.hub, "hub-a");
    free(j);
    /* what the encoder refuses: a reversed range, a zero, one range too many */
    a.alerts[0] = (struct ch_range){5, 4};
    assert_null(ch_ack_encode(&a));
    a.alerts[0] = (struct ch_range){0, 4};
    assert_null(ch_ack_encode(&a));
    a.alerts[0] = (struct ch_range){1, 4};
    a.n_readings = CH_ACK_MAX_RANGES + 1;
    assert_null(ch_ack_encode(&a));
    /* and the decoder names the field */
    static const char bad[] = "{\"schema\":\"carehub/ack/1\",\"site\":\"s1\",\"gateway\":\"g1\","
                              "\"ts\":1763850300000,\"readings\":[[3,2]],\"alerts\":[]}";
    assert_int_equal(ch_ack_decode(bad, strlen(bad), &b, err, sizeof err), CH_EINVAL);
    assert_non_null(strstr(err, "readings[0]"));
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
    struct ch_alert a;
    if (ch_alert_decode(buf, len, &a, err, sizeof err) == 0) {
        char *again = ch_alert_encode(&a);
        assert_non_null(again);
        free(again);
    } else {
        assert_true(is_empty_alert(&a));
    }
    struct ch_command c;
    if (ch_command_decode(buf, len, &c, err, sizeof err) == 0) {
        char *again = ch_command_encode(&c);
        assert_non_null(again);
        free(again);
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

    struct ch_alert al;
    alert_for(&al, CH_AE_ACK);
    char *alert = ch_alert_encode(&al);
    struct ch_command cm = {.action = CH_CMD_SHELVE, .ts_ms = 5, .duration_ms = 60000};
    strcpy(cm.alarm_id, "co2-high:env-101");
    strcpy(cm.by, "console:王护士");
    char *cmd = ch_command_encode(&cm);

    const char *seeds[] = {tel, st, alert, cmd};
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
    free(alert);
    free(cmd);
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
        cmocka_unit_test(test_alert_roundtrip),
        cmocka_unit_test(test_alert_encode_exact),
        cmocka_unit_test(test_alert_empty_optionals),
        cmocka_unit_test(test_alert_rules),
        cmocka_unit_test(test_alert_limits),
        cmocka_unit_test(test_alert_encode_refuses),
        cmocka_unit_test(test_command_roundtrip),
        cmocka_unit_test(test_command_rules),
        cmocka_unit_test(test_alarm_names),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_numbered),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_quality_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
