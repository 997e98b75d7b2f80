/* care-sim values: a pure function of (seed, device, metric, time), with
 * the daily shapes the edge's rules will see. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sim_model.h"
#include "sim_value.h"

#include <math.h>
#include <stdio.h>

/* 2025-11-23 00:00 local time at UTC+8 (16:00 UTC the day before) */
#define DAY0_MS 1763827200000LL
#define HOUR_MS 3600000LL
#define UTC8    480

static const struct sim_metric *metric(const char *model, const char *name)
{
    const struct sim_model *m = sim_model_find(model);
    assert_non_null(m);
    int i = sim_model_metric(m, name);
    assert_true(i >= 0);
    return m->metrics[i];
}

static void test_same_seed_same_values_any_order(void **state)
{
    (void)state;
    const struct sim_metric *t = metric("jxct-th", "temperature");
    uint64_t dev = sim_value_key("room101-th");
    double forward[200];
    for (int i = 0; i < 200; i++)
        forward[i] = sim_value_at(t, 42, dev, DAY0_MS + i * 7919LL * 1000, UTC8);
    /* asked backwards, interleaved with other devices and metrics: same answers */
    const struct sim_metric *h = metric("jxct-th", "humidity");
    for (int i = 199; i >= 0; i--) {
        (void)sim_value_at(h, 42, sim_value_key("other"), DAY0_MS + i * 1000LL, UTC8);
        assert_true(sim_value_at(t, 42, dev, DAY0_MS + i * 7919LL * 1000, UTC8) == forward[i]);
    }
}

static void test_different_seed_device_metric_differ(void **state)
{
    (void)state;
    const struct sim_metric *t = metric("jxct-th", "temperature");
    const struct sim_metric *co2 = metric("air-board", "co2");
    uint64_t a = sim_value_key("room101-th"), b = sim_value_key("room102-th");
    int seed_diff = 0, dev_diff = 0;
    for (int i = 0; i < 100; i++) {
        int64_t ts = DAY0_MS + i * 600000LL;
        seed_diff += sim_value_at(t, 42, a, ts, UTC8) != sim_value_at(t, 43, a, ts, UTC8);
        dev_diff += sim_value_at(co2, 42, a, ts, UTC8) != sim_value_at(co2, 42, b, ts, UTC8);
    }
    assert_true(seed_diff >= 95);
    assert_true(dev_diff >= 95);
    assert_true(sim_value_key("temperature") != sim_value_key("humidity"));
}

static void test_quantised_to_the_second(void **state)
{
    (void)state;
    const struct sim_metric *t = metric("air-board", "temperature");
    uint64_t dev = sim_value_key("x");
    int64_t ts = DAY0_MS + 10 * HOUR_MS;
    double v = sim_value_at(t, 1, dev, ts, UTC8);
    assert_true(sim_value_at(t, 1, dev, ts + 999, UTC8) == v);
    int changed = 0;
    for (int s = 1; s <= 10; s++)
        changed += sim_value_at(t, 1, dev, ts + s * 1000LL, UTC8) != v;
    assert_true(changed >= 8); /* fresh jitter every second */
}

static void test_daily_shape(void **state)
{
    (void)state;
    assert_float_equal(sim_value_daily(5.0), -1.0, 1e-9);
    assert_float_equal(sim_value_daily(15.0), 1.0, 1e-9);
    assert_float_equal(sim_value_daily(10.0), 0.0, 1e-9);
    assert_float_equal(sim_value_daily(22.0), 0.0, 1e-9); /* halfway down: 15 + 7 */
    assert_float_equal(sim_value_daily(23.999999), sim_value_daily(0.0), 1e-5);
    for (double h = 0.0; h < 24.0; h += 0.25) {
        assert_true(sim_value_daily(h) >= -1.0 && sim_value_daily(h) <= 1.0);
        assert_true(sim_value_occupancy(h) >= 0.0 && sim_value_occupancy(h) <= 1.0);
    }
    assert_float_equal(sim_value_occupancy(3.0), 0.0, 1e-9);
    assert_float_equal(sim_value_occupancy(13.5), 1.0, 1e-9);
}

/* Mean over 60 devices at local hour h, so noise averages out. */
static double mean_at(const struct sim_metric *m, double hour)
{
    double sum = 0;
    for (int d = 0; d < 60; d++) {
        char name[16];
        snprintf(name, sizeof name, "dev-%d", d);
        sum += sim_value_at(m, 42, sim_value_key(name), DAY0_MS + (int64_t)(hour * HOUR_MS), UTC8);
    }
    return sum / 60;
}

static void test_curves_follow_the_day(void **state)
{
    (void)state;
    const struct sim_metric *t = metric("jxct-th", "temperature");
    const struct sim_metric *h = metric("jxct-th", "humidity");
    const struct sim_metric *co2 = metric("air-board", "co2");
    double t5 = mean_at(t, 5), t15 = mean_at(t, 15), t10 = mean_at(t, 10);
    assert_true(t15 - t5 > 4.0); /* 2 x 2.5 degC amplitude */
    assert_true(t5 < t10 && t10 < t15);
    assert_true(t5 > 18.0 && t15 < 28.0);               /* a heated room */
    assert_true(mean_at(h, 5) - mean_at(h, 15) > 10.0); /* humidity moves against it */
    assert_true(mean_at(co2, 13.5) - mean_at(co2, 3) > 400.0);
    assert_true(mean_at(co2, 3) >= 400.0);
}

static void test_local_time_offset(void **state)
{
    (void)state;
    const struct sim_metric *t = metric("jxct-th", "temperature");
    uint64_t dev = sim_value_key("room");
    /* 15:00 at UTC+8 is 07:00 UTC: the same instant seen with offset 0 is 8 h earlier on the
     * curve, but the same instant and offset always give the same value */
    int64_t ts = DAY0_MS + 15 * HOUR_MS;
    assert_true(sim_value_at(t, 1, dev, ts, UTC8) == sim_value_at(t, 1, dev, ts, UTC8));
    assert_true(sim_value_at(t, 1, dev, ts, UTC8) != sim_value_at(t, 1, dev, ts, 0));
}

static void test_clamped(void **state)
{
    (void)state;
    const struct sim_metric *lel = metric("gas-lel", "lel");
    for (int i = 0; i < 2000; i++) {
        double v = sim_value_at(lel, 9, sim_value_key("k"), DAY0_MS + i * 1000LL, UTC8);
        assert_true(v >= 0.0 && v < 20.0); /* never a false gas alarm on its own */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_values_any_order),
        cmocka_unit_test(test_different_seed_device_metric_differ),
        cmocka_unit_test(test_quantised_to_the_second),
        cmocka_unit_test(test_daily_shape),
        cmocka_unit_test(test_curves_follow_the_day),
        cmocka_unit_test(test_local_time_offset),
        cmocka_unit_test(test_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
