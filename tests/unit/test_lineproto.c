/* Line protocol: escaping in every position, number formatting, and the
 * points made from telemetry, status and alert messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec.h"
#include "err.h"
#include "lineproto.h"
#include "util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum place { MEASUREMENT, TAG_KEY, TAG_VALUE, FIELD_KEY, FIELD_STRING };

struct esc_case {
    enum place where;
    const char *in;
    const char *want; /* the whole line */
};

static const struct esc_case esc_cases[] = {
    /* measurement: comma and space */
    {MEASUREMENT, "environment", "environment,t=v f=1 5\n"},
    {MEASUREMENT, "air quality", "air\\ quality,t=v f=1 5\n"},
    {MEASUREMENT, "a,b", "a\\,b,t=v f=1 5\n"},
    {MEASUREMENT, "a=b", "a=b,t=v f=1 5\n"},
    {MEASUREMENT, "say \"hi\"", "say\\ \"hi\",t=v f=1 5\n"},
    {MEASUREMENT, "back\\slash", "back\\\\slash,t=v f=1 5\n"},
    {MEASUREMENT, "two\nlines\r", "twolines,t=v f=1 5\n"},
    {MEASUREMENT, "温湿度", "温湿度,t=v f=1 5\n"},
    /* tag keys and values: comma, equals, space */
    {TAG_KEY, "room no", "m,room\\ no=v f=1 5\n"},
    {TAG_KEY, "a,b=c", "m,a\\,b\\=c=v f=1 5\n"},
    {TAG_VALUE, "101", "m,t=101 f=1 5\n"},
    {TAG_VALUE, "bed 3, window", "m,t=bed\\ 3\\,\\ window f=1 5\n"},
    {TAG_VALUE, "x=y", "m,t=x\\=y f=1 5\n"},
    {TAG_VALUE, "quote\"d", "m,t=quote\"d f=1 5\n"},
    {TAG_VALUE, "ends\\", "m,t=ends\\\\ f=1 5\n"},
    {TAG_VALUE, "new\nline", "m,t=newline f=1 5\n"},
    {TAG_VALUE, "µg/m³", "m,t=µg/m³ f=1 5\n"},
    {TAG_VALUE, "", "m f=1 5\n"}, /* empty tag values are left out */
    /* field keys: as tag keys */
    {FIELD_KEY, "pm2_5", "m,t=v pm2_5=1 5\n"},
    {FIELD_KEY, "air temp", "m,t=v air\\ temp=1 5\n"},
    {FIELD_KEY, "a,b=c", "m,t=v a\\,b\\=c=1 5\n"},
    {FIELD_KEY, "°C", "m,t=v °C=1 5\n"},
    /* string field values: double quote and backslash */
    {FIELD_STRING, "0.1.0", "m,t=v f=\"0.1.0\" 5\n"},
    {FIELD_STRING, "say \"hi\"", "m,t=v f=\"say \\\"hi\\\"\" 5\n"},
    {FIELD_STRING, "C:\\path\\", "m,t=v f=\"C:\\\\path\\\\\" 5\n"},
    {FIELD_STRING, "a b,c=d", "m,t=v f=\"a b,c=d\" 5\n"},
    {FIELD_STRING, "µg/m³ °C 次/分", "m,t=v f=\"µg/m³ °C 次/分\" 5\n"},
    {FIELD_STRING, "two\nlines", "m,t=v f=\"twolines\" 5\n"},
    {FIELD_STRING, "", "m,t=v f=\"\" 5\n"},
};

static void test_escaping(void **state)
{
    (void)state;
    for (size_t i = 0; i < CH_ARRAY_LEN(esc_cases); i++) {
        const struct esc_case *c = &esc_cases[i];
        struct lp_buf b;
        lp_init(&b);
        lp_begin(&b, c->where == MEASUREMENT ? c->in : "m");
        lp_tag(&b, c->where == TAG_KEY ? c->in : "t", c->where == TAG_VALUE ? c->in : "v");
        if (c->where == FIELD_STRING)
            lp_field_str(&b, "f", c->in);
        else
            lp_field_float(&b, c->where == FIELD_KEY ? c->in : "f", 1.0);
        assert_int_equal(lp_end(&b, 5), 0);
        if (strcmp(b.data, c->want) != 0)
            fail_msg("case %zu: got '%s' want '%s'", i, b.data, c->want);
        assert_int_equal(b.lines, 1);
        lp_free(&b);
    }
}

static void test_float_format(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {23.0, "23"},
        {23.4, "23.4"},
        {51.0, "51"},
        {-0.0015, "-0.0015"},
        {0.1 + 0.2, "0.30000000000000004"},
        {101325.25, "101325.25"},
        {1e20, "1e+20"},
        {1e-7, "1e-07"},
        {0.0, "0"},
        {1.0 / 3.0, "0.3333333333333333"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {-DBL_MAX, "-1.7976931348623157e+308"},
        {5e-324, "4.94065645841247e-324"}, /* reads back as 5e-324 */
        {9007199254740993.0, "9007199254740992"},
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(cases); i++) {
        char out[LP_FLOAT_MAX];
        size_t n = lp_format_float(out, cases[i].v);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%.17g: got '%s' want '%s'", cases[i].v, out, cases[i].want);
        assert_int_equal(n, strlen(out));
    }
    /* round trip for many doubles, never an integer suffix */
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof v);
        if (!isfinite(v))
            continue;
        char out[LP_FLOAT_MAX];
        size_t n = lp_format_float(out, v);
        assert_true(n < LP_FLOAT_MAX);
        assert_true(strtod(out, NULL) == v);
        assert_null(strchr(out, 'i'));
    }
}

static void test_field_types(void **state)
{
    (void)state;
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "carehub_hub");
    lp_tag(&b, "hub", "hub-1");
    lp_field_int(&b, "dropped", 0);
    lp_field_int(&b, "big", INT64_MAX);
    lp_field_int(&b, "neg", -3);
    lp_field_bool(&b, "online", true);
    lp_field_bool(&b, "off", false);
    lp_field_float(&b, "nan", NAN); /* skipped: line protocol has no NaN */
    lp_field_float(&b, "inf", INFINITY);
    lp_field_float(&b, "t", 23);
    assert_int_equal(lp_end(&b, 1763850000123), 0);
    assert_string_equal(b.data, "carehub_hub,hub=hub-1 dropped=0i,big=9223372036854775807i,"
                                "neg=-3i,online=true,off=false,t=23 1763850000123\n");
    lp_free(&b);
}

/* A point without fields is invalid line protocol: it is taken back. */
static void test_point_without_fields(void **state)
{
    (void)state;
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "m");
    lp_field_int(&b, "n", 1);
    lp_end(&b, 1);
    lp_begin(&b, "m");
    lp_tag(&b, "t", "v");
    lp_field_float(&b, "x", NAN);
    assert_int_equal(lp_end(&b, 2), CH_EINVAL);
    assert_string_equal(b.data, "m n=1i 1\n");
    assert_int_equal(b.lines, 1);
    size_t len, lines;
    char *d = lp_take(&b, &len, &lines);
    assert_int_equal(len, strlen("m n=1i 1\n"));
    assert_int_equal(lines, 1);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(d);

    lp_begin(&b, "m");
    assert_int_equal(lp_end(&b, 3), CH_EINVAL);
    assert_int_equal(b.len, 0);
    lp_free(&b);
}

static void test_telemetry_points(void **state)
{
    (void)state;
    const char *json =
        "{\"schema\":\"carehub/telemetry/1\",\"site\":\"cq-yz-001\",\"gateway\":\"gw-01\","
        "\"seq\":42,\"ts\":1763850000123,\"readings\":["
        "{\"device\":\"env-101\",\"measurement\":\"environment\",\"room\":\"101\","
        "\"ts\":1763850000100,\"quality\":\"good\",\"metrics\":{\"temperature\":23.4,"
        "\"humidity\":51.0},\"units\":{\"temperature\":\"°C\"}},"
        "{\"device\":\"aq-1\",\"measurement\":\"air_quality\",\"ts\":1763850000200,"
        "\"quality\":\"uncertain\",\"metrics\":{\"co2\":640,\"tvoc\":-1.5e-3}}]}";
    struct ch_telemetry t;
    char err[128];
    assert_int_equal(ch_telemetry_decode(json, strlen(json), &t, err, sizeof err), 0);
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(lp_telemetry(&b, &t), 2);
    assert_string_equal(b.data,
                        "environment,device=env-101,gateway=gw-01,quality=good,room=101,"
                        "site=cq-yz-001 temperature=23.4,humidity=51,seq=42i 1763850000100\n"
                        "air_quality,device=aq-1,gateway=gw-01,quality=uncertain,"
                        "site=cq-yz-001 co2=640,tvoc=-0.0015,seq=43i 1763850000200\n");
    assert_int_equal(b.lines, 2);
    lp_free(&b);
    ch_telemetry_free(&t);
}

static void test_status_points(void **state)
{
    (void)state;
    struct ch_status s = {.online = true, .ts_ms = 1763850000123};
    strcpy(s.site, "cq-yz-001");
    strcpy(s.gateway, "gw-01");
    strcpy(s.version, "0.1.0");
    strcpy(s.boot_id, "3f2a9c0d4b5e6f708192a3b4c5d6e7f8");
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(lp_status(&b, &s, 999), 0);
    /* the will: no ts, version or boot id; stamped with the receive time */
    struct ch_status will = {.online = false};
    strcpy(will.site, "cq-yz-001");
    strcpy(will.gateway, "gw-01");
    assert_int_equal(lp_status(&b, &will, 1763850099000), 0);
    assert_string_equal(b.data, "carehub_status,gateway=gw-01,site=cq-yz-001 "
                                "boot_id=\"3f2a9c0d4b5e6f708192a3b4c5d6e7f8\",online=true,"
                                "version=\"0.1.0\" 1763850000123\n"
                                "carehub_status,gateway=gw-01,site=cq-yz-001 online=false "
                                "1763850099000\n");
    lp_free(&b);
}

/* A birth's inventory: a carehub_device point per device, at the status
 * time (the receive time for a status without one); a will has none. */
static void test_inventory(void **state)
{
    (void)state;
    struct ch_device_info devs[2] = {
        {.id = "air-101", .profile = "air", .bus = "rs485-1", .room = "101"},
        {.id = "band 7", .profile = "band", .bus = "ble"}};
    struct ch_status s = {.online = true, .ts_ms = 1763850000123, .n_devices = 2, .devices = devs};
    strcpy(s.site, "cq-yz-001");
    strcpy(s.gateway, "gw-01");
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(lp_inventory(&b, &s, 999), 2);
    s.ts_ms = 0;
    s.n_devices = 1;
    assert_int_equal(lp_inventory(&b, &s, 1763850099000), 1);
    struct ch_status will = {.online = false};
    assert_int_equal(lp_inventory(&b, &will, 1), 0);
    assert_string_equal(
        b.data, "carehub_device,device=air-101,gateway=gw-01,site=cq-yz-001 bus=\"rs485-1\","
                "profile=\"air\",room=\"101\" 1763850000123\n"
                "carehub_device,device=band\\ 7,gateway=gw-01,site=cq-yz-001 bus=\"ble\","
                "profile=\"band\" 1763850000123\n"
                "carehub_device,device=air-101,gateway=gw-01,site=cq-yz-001 bus=\"rs485-1\","
                "profile=\"air\",room=\"101\" 1763850099000\n");
    lp_free(&b);
}

/* The acknowledged SOS of bed 203-1, as the gateway sends it. */
static const char sos_ack[] =
    "{\"schema\":\"carehub/alert/1\",\"site\":\"cq-yz-001\",\"gateway\":\"gw-01\","
    "\"alarm_id\":\"sos:btn-203-1\",\"rule\":\"sos\",\"device\":\"btn-203-1\",\"room\":\"203\","
    "\"bed\":\"203-1\",\"resident\":\"r-7f3a9c01\",\"priority\":\"high\",\"state\":\"acked\","
    "\"event\":\"ack\",\"escalation\":1,\"latched\":true,\"metric\":\"sos\",\"value\":1,"
    "\"message\":\"203 室 \\\"SOS\\\" C:\\\\bed\",\"ts_ms\":1763850095000,"
    "\"raised_ms\":1763850005000,\"acked_ms\":1763850095000,\"by\":\"console:王 护士\","
    "\"group\":\"flood:gw-01\"}";

static const char sos_ack_line[] =
    "alarm,alarm_id=sos:btn-203-1,bed=203-1,device=btn-203-1,event=ack,gateway=gw-01,"
    "priority=high,resident=r-7f3a9c01,room=203,rule=sos,site=cq-yz-001,state=acked "
    "value=1,metric=\"sos\",escalation=1i,latched=true,message=\"203 室 \\\"SOS\\\" C:\\\\bed\","
    "raised_ms=1763850005000i,acked_ms=1763850095000i,by=\"console:王 护士\","
    "group=\"flood:gw-01\" 1763850095000\n";

static void test_alert_points(void **state)
{
    (void)state;
    struct ch_alert a;
    char err[256] = "";
    assert_int_equal(ch_alert_decode(sos_ack, strlen(sos_ack), &a, err, sizeof err), 0);
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(lp_alert(&b, &a), 0);
    assert_string_equal(b.data, sos_ack_line);
    assert_int_equal(b.lines, 1);

    /* the least: no room/bed/resident tags, no value, metric, message, by,
     * group or optional times; escalation and latched always there */
    const char *stale = "{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\","
                        "\"alarm_id\":\"stale:band-17\",\"rule\":\"stale\",\"device\":\"band-17\","
                        "\"priority\":\"low\",\"state\":\"unack\",\"event\":\"raise\","
                        "\"escalation\":0,\"latched\":false,\"ts_ms\":5,\"raised_ms\":5}";
    assert_int_equal(ch_alert_decode(stale, strlen(stale), &a, err, sizeof err), 0);
    lp_free(&b);
    assert_int_equal(lp_alert(&b, &a), 0);
    assert_string_equal(b.data, "alarm,alarm_id=stale:band-17,device=band-17,event=raise,"
                                "gateway=g,priority=low,rule=stale,site=s,state=unack "
                                "escalation=0i,latched=false,raised_ms=5i 5\n");

    /* every optional time, each an integer; a whole-number value stays a float */
    const char *rtn = "{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"g\","
                      "\"alarm_id\":\"co2:env\",\"rule\":\"co2\",\"device\":\"env\","
                      "\"priority\":\"medium\",\"state\":\"shelved\",\"event\":\"shelve\","
                      "\"escalation\":0,\"latched\":false,\"value\":930.0,\"ts_ms\":9,"
                      "\"raised_ms\":5,\"acked_ms\":6,\"cleared_ms\":7,\"shelved_until_ms\":99}";
    assert_int_equal(ch_alert_decode(rtn, strlen(rtn), &a, err, sizeof err), 0);
    lp_free(&b);
    assert_int_equal(lp_alert(&b, &a), 0);
    assert_string_equal(b.data, "alarm,alarm_id=co2:env,device=env,event=shelve,gateway=g,"
                                "priority=medium,rule=co2,site=s,state=shelved value=930,"
                                "escalation=0i,latched=false,raised_ms=5i,acked_ms=6i,"
                                "cleared_ms=7i,shelved_until_ms=99i 9\n");
    lp_free(&b);
}

/* A redelivered alert (QoS 1) must make the very same point, so that it
 * overwrites the first; and two transitions of one alarm in the same
 * millisecond must not. */
static void test_alert_idempotent(void **state)
{
    (void)state;
    struct lp_buf first, again;
    lp_init(&first);
    lp_init(&again);
    for (int i = 0; i < 2; i++) {
        struct ch_alert a;
        char err[256];
        assert_int_equal(ch_alert_decode(sos_ack, strlen(sos_ack), &a, err, sizeof err), 0);
        lp_alert(i ? &again : &first, &a);
    }
    assert_string_equal(first.data, again.data);

    struct ch_alert a;
    char err[256];
    assert_int_equal(ch_alert_decode(sos_ack, strlen(sos_ack), &a, err, sizeof err), 0);
    a.event = CH_AE_ESCALATE;
    a.state = CH_AS_UNACK;
    struct lp_buf other;
    lp_init(&other);
    lp_alert(&other, &a);
    /* same alarm and time; the series (tags) differ */
    const char *sp1 = strchr(first.data, ' '), *sp2 = strchr(other.data, ' ');
    assert_true((size_t)(sp1 - first.data) != (size_t)(sp2 - other.data) ||
                memcmp(first.data, other.data, (size_t)(sp1 - first.data)) != 0);
    assert_string_equal(strrchr(first.data, ' '), strrchr(other.data, ' '));
    lp_free(&first);
    lp_free(&again);
    lp_free(&other);
}

/* lp_alert escapes whatever it is given: a struct filled by hand (not by
 * the decoder, which refuses these) with every special character. */
static void test_alert_escaping(void **state)
{
    (void)state;
    struct ch_alert a = {
        .priority = CH_PRIO_HIGH, .state = CH_AS_UNACK, .event = CH_AE_RAISE, .ts_ms = 7};
    strcpy(a.site, "s");
    strcpy(a.gateway, "g");
    strcpy(a.alarm_id, "r=1:d,2");
    strcpy(a.rule, "r=1");
    strcpy(a.device, "d,2");
    strcpy(a.room, "bed 3, window");
    strcpy(a.bed, "ends\\");
    strcpy(a.resident, "new\nline");
    strcpy(a.metric, "say \"x\"");
    strcpy(a.message, "two\nlines, \"quoted\" and C:\\dir\\");
    strcpy(a.by, "a\\\"b");
    struct lp_buf b;
    lp_init(&b);
    assert_int_equal(lp_alert(&b, &a), 0);
    assert_string_equal(b.data, "alarm,alarm_id=r\\=1:d\\,2,bed=ends\\\\,device=d\\,2,event=raise,"
                                "gateway=g,priority=high,resident=newline,"
                                "room=bed\\ 3\\,\\ window,rule=r\\=1,site=s,state=unack "
                                "metric=\"say \\\"x\\\"\",escalation=0i,latched=false,"
                                "message=\"twolines, \\\"quoted\\\" and C:\\\\dir\\\\\","
                                "by=\"a\\\\\\\"b\" 7\n");
    /* one point, one line: no newline but the last */
    assert_int_equal(b.lines, 1);
    assert_ptr_equal(strchr(b.data, '\n'), b.data + b.len - 1);
    lp_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),         cmocka_unit_test(test_float_format),
        cmocka_unit_test(test_field_types),      cmocka_unit_test(test_point_without_fields),
        cmocka_unit_test(test_telemetry_points), cmocka_unit_test(test_status_points),
        cmocka_unit_test(test_inventory),        cmocka_unit_test(test_alert_points),
        cmocka_unit_test(test_alert_idempotent), cmocka_unit_test(test_alert_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
