/* care-sim scenarios: ramp/hold/release evaluation, faults over time, and
 * the config and scenario files that produce them (good and bad). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "sim_config.h"
#include "sim_scenario.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The curve under the events: 100 + t in seconds, so the ramp's starting
 * point is easy to check. */
static double line(const void *ctx, int64_t at_ms)
{
    (void)ctx;
    return 100.0 + (double)at_ms / 1000.0;
}

static double at(const struct sim_set *s, size_t n, int64_t ms)
{
    return sim_scenario_value(s, n, ms, line, NULL);
}

static void test_no_events_follows_curve(void **state)
{
    (void)state;
    assert_float_equal(at(NULL, 0, 5000), 105.0, 1e-9);
}

static void test_ramp_from_curve(void **state)
{
    (void)state;
    /* CO2 climbing in a nap room: at 30 s ramp from the curve (130) to 2400 over 10 min */
    const struct sim_set s[] = {
        {.at_ms = 30000, .kind = SIM_SET_RAMP, .value = 2400, .over_ms = 600000}};
    assert_float_equal(at(s, 1, 29999), 129.999, 1e-9);
    assert_float_equal(at(s, 1, 30000), 130.0, 1e-9);
    assert_float_equal(at(s, 1, 30000 + 300000), 130.0 + (2400 - 130) / 2.0, 1e-9);
    assert_float_equal(at(s, 1, 630000), 2400.0, 1e-9);
    assert_float_equal(at(s, 1, 10000000), 2400.0, 1e-9);
}

static void test_hold_ramp_release_chain(void **state)
{
    (void)state;
    const struct sim_set s[] = {
        {.at_ms = 10000, .kind = SIM_SET_VALUE, .value = 35},
        {.at_ms = 20000, .kind = SIM_SET_RAMP, .value = 15, .over_ms = 10000},
        {.at_ms = 25000, .kind = SIM_SET_RAMP, .value = 0, .over_ms = 5000}, /* cuts in */
        {.at_ms = 40000, .kind = SIM_SET_RELEASE},
    };
    assert_float_equal(at(s, 4, 9999), 109.999, 1e-9);
    assert_float_equal(at(s, 4, 10000), 35.0, 1e-9);
    assert_float_equal(at(s, 4, 20000), 35.0, 1e-9);
    assert_float_equal(at(s, 4, 22500), 30.0, 1e-9);
    /* the second ramp starts where the first one was at 25 s: 25 */
    assert_float_equal(at(s, 4, 25000), 25.0, 1e-9);
    assert_float_equal(at(s, 4, 27500), 12.5, 1e-9);
    assert_float_equal(at(s, 4, 35000), 0.0, 1e-9);
    assert_float_equal(at(s, 4, 40000), 140.0, 1e-9);
}

static void test_equal_times_last_wins(void **state)
{
    (void)state;
    const struct sim_set s[] = {
        {.at_ms = 1000, .kind = SIM_SET_VALUE, .value = 1},
        {.at_ms = 1000, .kind = SIM_SET_VALUE, .value = 2},
    };
    assert_float_equal(at(s, 2, 1000), 2.0, 1e-9);
}

/* A pull cord pressed for a while, a resident out of bed for 25 minutes:
 * the value for the duration, then whatever was in force before. */
static void test_pulse(void **state)
{
    (void)state;
    const struct sim_set s[] = {
        {.at_ms = 10000, .kind = SIM_SET_PULSE, .value = 1, .over_ms = 5000},
        {.at_ms = 20000, .kind = SIM_SET_VALUE, .value = 7},
        {.at_ms = 30000, .kind = SIM_SET_PULSE, .value = 0, .over_ms = 10000},
        {.at_ms = 50000, .kind = SIM_SET_RAMP, .value = 50, .over_ms = 10000},
        {.at_ms = 70000, .kind = SIM_SET_PULSE, .value = 0, .over_ms = 1000},
        {.at_ms = 80000, .kind = SIM_SET_RELEASE},
    };
    static const struct {
        int64_t ms;
        double v;
        bool held;
    } seq[] = {
        {9999, 109.999, false}, {10000, 1, true},        {14999, 1, true}, /* pulse on the curve */
        {15000, 115, false},    {19999, 119.999, false},                   /* curve again */
        {20000, 7, true},       {30000, 0, true},        {39999, 0, true}, /* pulse on a hold */
        {40000, 7, true},                                                  /* the hold again */
        {50000, 7, true},       {55000, 28.5, true},                       /* ramp from the hold */
        {60000, 50, true},      {70000, 0, true},        {71000, 50, true}, {80000, 180, false},
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        if (fabs(at(s, 6, seq[i].ms) - seq[i].v) > 1e-9)
            fail_msg("at %lld ms: %g, expected %g", (long long)seq[i].ms, at(s, 6, seq[i].ms),
                     seq[i].v);
        if (sim_scenario_held(s, 6, seq[i].ms) != seq[i].held)
            fail_msg("at %lld ms: held %d", (long long)seq[i].ms, !seq[i].held);
    }
    assert_false(sim_scenario_held(NULL, 0, 0));
}

static void test_fault_lookup(void **state)
{
    (void)state;
    const struct sim_fault_ev f[] = {
        {.at_ms = 0, .fault = SIM_FAULT_SILENT},
        {.at_ms = 60000, .fault = SIM_FAULT_NONE},
    };
    assert_null(sim_scenario_fault(f + 1, 1, 59999));
    assert_int_equal(sim_scenario_fault(f, 2, 0)->fault, SIM_FAULT_SILENT);
    assert_int_equal(sim_scenario_fault(f, 2, 59999)->fault, SIM_FAULT_SILENT);
    assert_int_equal(sim_scenario_fault(f, 2, 60000)->fault, SIM_FAULT_NONE);
}

/* ---- files ------------------------------------------------------------- */

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/test_sim_scenario_XXXXXX.yaml");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static const char *site =
    "seed: 42\n"
    "endpoints:\n"
    "  - id: bus\n"
    "    rtu: /tmp/x/ptyB\n"
    "    baud: 19200\n"
    "    parity: E\n"
    "  - id: lan\n"
    "    tcp: 127.0.0.1:15020\n"
    "slaves:\n"
    "  - {name: th, endpoint: bus, unit: 1, model: jxct-th}\n"
    "  - {name: nap-co2, endpoint: bus, model: co2-s8}\n"
    "  - {name: air, endpoint: lan, unit: 10, model: air-board, count: 3}\n"
    "scenario:\n"
    "  - {at: 2m, slave: th, fault: none}\n"
    "  - {at: 1m, slave: th, fault: exception}\n"
    "  - {at: 30s, slave: air, set: {metric: co2, ramp_to: 2400, over: 10m}}\n";

static const char *extra = "scenario:\n"
                           "  - {at: 1m, slave: air-2, fault: silent}\n"
                           "  - {at: 0s, slave: nap-co2, set: {metric: co2, value: 900}}\n"
                           "  - {at: 5m, slave: nap-co2, set: {metric: co2, release: true}}\n";

static void test_load_site_and_scenario(void **state)
{
    (void)state;
    char *p = write_tmp(site), *q = write_tmp(extra);
    struct sim_config c;
    assert_int_equal(sim_config_load(p, q, false, &c), 0);
    assert_int_equal(c.seed, 42);
    assert_int_equal(c.utc_offset_min, 480);
    assert_int_equal(c.nendpoints, 2);
    assert_int_equal(c.endpoints[0].transport, SIM_RTU);
    assert_string_equal(c.endpoints[0].path, "/tmp/x/ptyB");
    assert_int_equal(c.endpoints[0].baud, 19200);
    assert_int_equal(c.endpoints[0].parity, 'E');
    assert_int_equal(c.endpoints[0].data_bits, 8);
    assert_int_equal(c.endpoints[0].stop_bits, 1);
    assert_int_equal(c.endpoints[1].transport, SIM_TCP);
    assert_string_equal(c.endpoints[1].host, "127.0.0.1");
    assert_string_equal(c.endpoints[1].port, "15020");

    assert_int_equal(c.nslaves, 5);
    assert_int_equal(c.slaves[1].unit, 0xFE); /* the S8's default address */
    static const char *names[] = {"th", "nap-co2", "air-1", "air-2", "air-3"};
    static const uint8_t units[] = {1, 0xFE, 10, 11, 12};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(c.slaves[i].name, names[i]);
        assert_int_equal(c.slaves[i].unit, units[i]);
    }

    /* 2 + 3 (group event per replica) + 3 from the scenario file, sorted by time */
    assert_int_equal(c.nevents, 8);
    for (size_t i = 1; i < c.nevents; i++)
        assert_true(c.events[i - 1].at_ms <= c.events[i].at_ms);
    assert_int_equal(c.events[0].at_ms, 0);
    assert_int_equal(c.events[0].slave, 1);
    assert_int_equal(c.events[0].set.kind, SIM_SET_VALUE);
    assert_float_equal(c.events[0].set.value, 900, 1e-9);
    for (size_t i = 1; i <= 3; i++) {
        assert_int_equal(c.events[i].at_ms, 30000);
        assert_int_equal(c.events[i].slave, 1 + i);
        assert_int_equal(c.events[i].set.kind, SIM_SET_RAMP);
        assert_int_equal(c.events[i].set.over_ms, 600000);
        assert_int_equal(c.events[i].metric, 3); /* air-board: co2 */
    }
    /* at 1 m: th's exception (main file) before air-2's silence (scenario file) */
    assert_int_equal(c.events[4].slave, 0);
    assert_int_equal(c.events[4].fault.fault, SIM_FAULT_EXCEPTION);
    assert_int_equal(c.events[4].fault.exception_code, 4);
    assert_int_equal(c.events[5].slave, 3);
    assert_int_equal(c.events[5].fault.fault, SIM_FAULT_SILENT);
    assert_int_equal(c.events[6].fault.fault, SIM_FAULT_NONE);
    assert_int_equal(c.events[7].set.kind, SIM_SET_RELEASE);
    sim_config_free(&c);
    unlink(p);
    unlink(q);
    free(p);
    free(q);
}

/* Each bad file, and what the report must say (file:line:column and the key
 * are cfg.c's job; the sim's checks must point at the right thing). */
static const struct {
    const char *yaml;
    const char *says;
} bad_configs[] = {
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502', typo: 1}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n",
     ":1:46: error: unknown key 'typo'"},
    {"endpoints: [{id: lan, tcp: '0.0.0.0:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n",
     ":1:29: error: key 'tcp': '0.0.0.0' is not a loopback address"},
    {"endpoints: [{id: x, tcp: '127.0.0.1:1502', rtu: /tmp/p}]\n"
     "slaves: [{name: a, endpoint: x, model: jxct-th}]\n",
     "needs exactly one of 'tcp' or 'rtu'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502', baud: 9600}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n",
     "key 'baud' is for 'rtu' endpoints only"},
    {"endpoints: [{id: bus, rtu: /tmp/p, baud: 9601}]\n"
     "slaves: [{name: a, endpoint: bus, model: jxct-th}]\n",
     "9601 is not a standard rate"},
    {"endpoints: [{id: bus, rtu: /tmp/p}]\n"
     "slaves: [{name: a, endpoint: bus, model: jxct-th}, {name: b, endpoint: bus, model: "
     "xy-md02}]\n",
     ":2:59: error: unit 1 on endpoint 'bus' is already taken by slave 'a'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, unit: 200, model: air-board, count: 100}]\n",
     ":2:71: error: key 'count': units 200..299 go past 255"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: modbus-thing}]\n",
     "unknown model 'modbus-thing' (models: jxct-th air-board xy-md02 co2-s8 gas-lel bed-mb "
     "call-panel relay-4ch)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: p, endpoint: lan, model: call-panel}]\n"
     "scenario: [{at: 1s, slave: p, set: {metric: sos, value: 2}}]\n",
     ":3:57: error: key 'value': 2 is outside what metric 'sos' can show (0..1)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: b, endpoint: lan, model: bed-mb}]\n"
     "scenario: [{at: 1s, slave: b, set: {metric: hr, ramp_to: -5, over: 1m}}]\n",
     "key 'ramp_to': -5 is outside what metric 'hr' can show (0..250)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: b, endpoint: lan, model: bed-mb}]\n"
     "scenario: [{at: 1s, slave: b, set: {metric: in_bed, pulse: 0}}]\n",
     "'for' goes with 'pulse', and 'pulse' needs it"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: b, endpoint: lan, model: bed-mb}]\n"
     "scenario: [{at: 1s, slave: b, set: {metric: in_bed, value: 0, for: 1m}}]\n",
     "'for' goes with 'pulse', and 'pulse' needs it"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: b, endpoint: lan, model: bed-mb}]\n"
     "scenario: [{at: 1s, slave: b, set: {metric: in_bed, value: 0, pulse: 1, for: 1m}}]\n",
     "needs exactly one of 'value', 'ramp_to' (with 'over'), 'pulse' (with 'for') or "
     "'release: true'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: b, endpoint: lan, model: bed-mb}]\n"
     "scenario: [{at: 1s, slave: b, set: {metric: heart_rate, value: 60}}]\n",
     "model 'bed-mb' has no metric 'heart_rate' (it has: in_bed hr rr movement presence)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: r, endpoint: lan, model: relay-4ch}]\n"
     "scenario: [{at: 1s, slave: r, set: {metric: coil0, value: 1}}]\n",
     "model 'relay-4ch' has no metrics to set (its outputs are driven over Modbus)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: b, fault: silent}]\n",
     ":3:28: error: key 'slave': no slave or replicated group is named 'b'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: a, set: {metric: co2, value: 1}}]\n",
     "model 'jxct-th' has no metric 'co2' (it has: humidity temperature)"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: a, set: {metric: temperature, ramp_to: 30}}]\n",
     "'over' goes with 'ramp_to'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: a, fault: silent, set: {metric: temperature, value: 3}}]\n",
     "needs exactly one of 'fault' or 'set'"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: a, fault: silent, exception_code: 4}]\n",
     "'exception_code' goes with 'fault: exception' only"},
    {"endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n"
     "scenario: [{at: 1s, slave: a, fault: exception, exception_code: 12}]\n",
     "12 is out of range (between 1 and 11)"},
    {"seed: many\n"
     "endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
     "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n",
     ":1:7: error: key 'seed': expected an integer, got 'many'"},
};

/* Loads path with stderr captured into buf. */
static int load_capturing(const char *path, struct sim_config *c, char *buf, size_t n)
{
    char cap[] = "/tmp/test_sim_stderr_XXXXXX";
    int fd = mkstemp(cap);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    int rc = sim_config_load(path, NULL, false, c);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t got = pread(fd, buf, n - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    close(fd);
    unlink(cap);
    return rc;
}

static void test_bad_configs_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
        char *p = write_tmp(bad_configs[i].yaml);
        struct sim_config c;
        char report[4096];
        int rc = load_capturing(p, &c, report, sizeof report);
        if (rc != CH_ECONFIG)
            fail_msg("bad config %zu was accepted (rc %d):\n%s", i, rc, bad_configs[i].yaml);
        if (!strstr(report, p) || !strstr(report, bad_configs[i].says))
            fail_msg("bad config %zu: report does not name the file and say \"%s\":\n%s", i,
                     bad_configs[i].says, report);
        sim_config_free(&c);
        unlink(p);
        free(p);
    }
}

/* The set action on the care devices: press SOS, reset it, a bed exit as a
 * pulse, a fault on the relay. */
static void test_load_care_devices(void **state)
{
    (void)state;
    char *p = write_tmp("endpoints: [{id: lan, tcp: '127.0.0.1:1502'}]\n"
                        "slaves:\n"
                        "  - {name: bed-12, endpoint: lan, unit: 12, model: bed-mb}\n"
                        "  - {name: panel-12, endpoint: lan, unit: 13, model: call-panel}\n"
                        "  - {name: relay-9, endpoint: lan, unit: 9, model: relay-4ch}\n"
                        "scenario:\n"
                        "  - {at: 10s, slave: panel-12, set: {metric: sos, value: 1}}\n"
                        "  - {at: 1m, slave: panel-12, set: {metric: sos, value: 0}}\n"
                        "  - {at: 5s, slave: bed-12, set: {metric: in_bed, pulse: 0, for: 25m}}\n"
                        "  - {at: 20s, slave: relay-9, fault: silent}\n"
                        "  - {at: 30s, slave: panel-12, set: {metric: fall, release: true}}\n");
    struct sim_config c;
    assert_int_equal(sim_config_load(p, NULL, false, &c), 0);
    assert_int_equal(c.nslaves, 3);
    assert_int_equal(c.slaves[2].model, sim_model_find("relay-4ch"));
    assert_int_equal(c.nevents, 5);
    assert_int_equal(c.events[0].slave, 0);
    assert_int_equal(c.events[0].set.kind, SIM_SET_PULSE);
    assert_int_equal(c.events[0].set.over_ms, 25 * 60000);
    assert_float_equal(c.events[0].set.value, 0.0, 0);
    assert_int_equal(c.events[0].metric, 0); /* in_bed */
    assert_int_equal(c.events[1].slave, 1);
    assert_int_equal(c.events[1].set.kind, SIM_SET_VALUE);
    assert_float_equal(c.events[1].set.value, 1.0, 0);
    assert_int_equal(c.events[1].metric, 0); /* sos */
    assert_int_equal(c.events[2].kind, SIM_EVENT_FAULT);
    assert_int_equal(c.events[3].set.kind, SIM_SET_RELEASE);
    assert_int_equal(c.events[3].metric, 1); /* fall */
    assert_int_equal(c.events[4].at_ms, 60000);
    assert_float_equal(c.events[4].set.value, 0.0, 0);
    sim_config_free(&c);
    unlink(p);
    free(p);
}

static void test_allow_any_address(void **state)
{
    (void)state;
    char *p = write_tmp("endpoints: [{id: lan, tcp: '0.0.0.0:1502'}]\n"
                        "slaves: [{name: a, endpoint: lan, model: jxct-th}]\n");
    struct sim_config c;
    assert_int_equal(sim_config_load(p, NULL, true, &c), 0);
    sim_config_free(&c);
    unlink(p);
    free(p);
}

static void test_shipped_examples_load(void **state)
{
    (void)state;
    const char *src = getenv("CAREHUB_SRC");
    if (!src)
        skip();
    static const char *const files[][2] = {
        {"site.yaml", NULL},
        {"site.yaml", "faults.yaml"},
        {"site.yaml", "nap-room-co2.yaml"},
        {"bench-100.yaml", NULL},
        {"care-room.yaml", NULL},
        {"care-room.yaml", "care-room-night.yaml"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/deploy/sim/%s", src, files[i][0]);
        if (files[i][1])
            snprintf(b, sizeof b, "%s/deploy/sim/%s", src, files[i][1]);
        struct sim_config c;
        if (sim_config_load(a, files[i][1] ? b : NULL, false, &c) != 0)
            fail_msg("%s %s does not load", files[i][0], files[i][1] ? files[i][1] : "");
        if (i == 3)
            assert_int_equal(c.nslaves, 100);
        sim_config_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_events_follows_curve),
        cmocka_unit_test(test_ramp_from_curve),
        cmocka_unit_test(test_hold_ramp_release_chain),
        cmocka_unit_test(test_equal_times_last_wins),
        cmocka_unit_test(test_pulse),
        cmocka_unit_test(test_fault_lookup),
        cmocka_unit_test(test_load_site_and_scenario),
        cmocka_unit_test(test_bad_configs_rejected),
        cmocka_unit_test(test_load_care_devices),
        cmocka_unit_test(test_allow_any_address),
        cmocka_unit_test(test_shipped_examples_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
