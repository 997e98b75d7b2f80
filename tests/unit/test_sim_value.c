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
#include <stdbool.h>
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

/* ---- the bed routine --------------------------------------------------- */

#define MIN_MS 60000LL

/* Local day d (0 = DAY0) at hour h. */
static int64_t local(int d, double h)
{
    return DAY0_MS + d * 24 * HOUR_MS + (int64_t)(h * HOUR_MS);
}

static bool in_bed(uint64_t seed, uint64_t dev, int64_t ts)
{
    struct sim_bed b;
    sim_value_bed(seed, dev, ts, UTC8, &b);
    return b.in_bed;
}

/* Over many residents and days: asleep at night, up in the morning, a nap
 * after lunch, up in the afternoon and evening; exactly one short trip out
 * of bed at night. */
static void test_bed_routine(void **state)
{
    (void)state;
    static const struct {
        double hour;
        bool in_bed;
    } fixed[] = {
        {0.25, true}, {4.0, true},   {5.9, true},   {7.1, false},  {10.0, false}, {12.1, false},
        {13.0, true}, {14.3, false}, {18.0, false}, {20.3, false}, {21.75, true}, {23.9, true},
    };
    for (int dev = 0; dev < 20; dev++) {
        char name[16];
        snprintf(name, sizeof name, "bed-%d", dev);
        uint64_t key = sim_value_key(name);
        for (int d = 0; d < 7; d++) {
            for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
                if (in_bed(42, key, local(d, fixed[i].hour)) != fixed[i].in_bed)
                    fail_msg("%s day %d %.2f h: in_bed %d", name, d, fixed[i].hour,
                             !fixed[i].in_bed);
            /* 00:00-05:00, minute by minute: one trip of 3..12 min */
            int trips = 0, out_min = 0;
            bool prev = true;
            for (int m = 0; m < 300; m++) {
                bool now = in_bed(42, key, local(d, m / 60.0));
                trips += prev && !now;
                out_min += !now;
                prev = now;
            }
            if (trips != 1 || out_min < 2 || out_min > 13)
                fail_msg("%s day %d: %d trips, %d min out of bed at night", name, d, trips,
                         out_min);
        }
    }
}

static void test_bed_routine_differs_by_day_and_device(void **state)
{
    (void)state;
    uint64_t a = sim_value_key("bed-a"), b = sim_value_key("bed-b");
    /* the minute the resident gets up differs between days and residents */
    int64_t up[2][5];
    for (int k = 0; k < 2; k++) {
        for (int d = 0; d < 5; d++) {
            int m = 5 * 60;
            while (in_bed(7, k ? b : a, local(d, m / 60.0)))
                m++;
            up[k][d] = m;
            assert_true(m >= 6 * 60 && m <= 7 * 60);
        }
    }
    int same_day = 0, same_dev = 0;
    for (int d = 1; d < 5; d++)
        same_day += up[0][d] == up[0][0];
    for (int d = 0; d < 5; d++)
        same_dev += up[0][d] == up[1][d];
    assert_true(same_day <= 1 && same_dev <= 1);
    /* and the same seed gives the same routine */
    assert_true(in_bed(7, a, local(2, 6.5)) == in_bed(7, a, local(2, 6.5)));
}

static void test_bed_metrics_follow_the_resident(void **state)
{
    (void)state;
    const struct sim_metric *hr = metric("bed-mb", "hr"), *rr = metric("bed-mb", "rr"),
                            *mv = metric("bed-mb", "movement"), *pr = metric("bed-mb", "presence"),
                            *ib = metric("bed-mb", "in_bed");
    uint64_t key = sim_value_key("bed-12");
    int in = 0, hr_typical = 0, settling = 0;
    for (int64_t ts = local(0, 0); ts < local(2, 0); ts += 17000) {
        struct sim_bed b;
        sim_value_bed(3, key, ts, UTC8, &b);
        double h = sim_value_at(hr, 3, key, ts, UTC8), r = sim_value_at(rr, 3, key, ts, UTC8);
        double m = sim_value_at(mv, 3, key, ts, UTC8), p = sim_value_at(pr, 3, key, ts, UTC8);
        assert_true(sim_value_at(ib, 3, key, ts, UTC8) == (b.in_bed ? 1.0 : 0.0));
        assert_true(m >= 0.0 && m <= 100.0);
        if (b.near_s <= SIM_BED_SETTLE_S) {
            settling++;
            assert_true(p == 1.0 && m >= 40.0); /* getting in or out: at the bedside, moving */
        }
        if (!b.in_bed) {
            assert_true(h == 0.0 && r == 0.0);
            if (b.near_s > SIM_BED_SETTLE_S)
                assert_true(p == 0.0 && m == 0.0);
            continue;
        }
        in++;
        assert_true(p == 1.0);
        assert_true(h >= 55.0 && h <= 80.0);
        assert_true(r >= 10.0 && r <= 20.0);
        hr_typical += h >= 60.0 && h <= 75.0;
        if (b.near_s > SIM_BED_SETTLE_S)
            assert_true(m <= 30.0); /* asleep: little movement */
    }
    assert_true(in > 3000);                  /* about 10 h of 24 over two days, every 17 s */
    assert_true(hr_typical * 100 > in * 95); /* 60-75 bpm nearly always */
    assert_true(settling > 0);
}

/* A scenario that puts the resident elsewhere: the shaped values follow. */
static void test_bed_shaped_by_scenario(void **state)
{
    (void)state;
    const struct sim_metric *hr = metric("bed-mb", "hr"), *pr = metric("bed-mb", "presence");
    uint64_t key = sim_value_key("bed-1");
    int64_t noon_walk = local(0, 10.0); /* the routine says: out of bed */
    struct sim_bed in = {.in_bed = true, .near_s = INT64_MAX};
    struct sim_bed out = {.in_bed = false, .near_s = INT64_MAX};
    double h = sim_value_shaped(hr, 1, key, noon_walk, UTC8, &in);
    assert_true(h >= 55.0 && h <= 80.0);
    assert_true(sim_value_shaped(pr, 1, key, noon_walk, UTC8, &in) == 1.0);
    assert_true(sim_value_shaped(hr, 1, key, local(0, 3.0), UTC8, &out) == 0.0);
    assert_true(sim_value_shaped(pr, 1, key, local(0, 3.0), UTC8, &out) == 0.0);
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
        cmocka_unit_test(test_bed_routine),
        cmocka_unit_test(test_bed_routine_differs_by_day_and_device),
        cmocka_unit_test(test_bed_metrics_follow_the_resident),
        cmocka_unit_test(test_bed_shaped_by_scenario),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
