/* The hub's tracking of each gateway's reading numbers: gaps open on a jump,
 * fill when the backlog arrives, split when the middle arrives, count
 * duplicates, and are reported lost only after the grace time without a
 * replay from that gateway. */
#include "presence.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define GRACE 1000

static struct presence_seq_stats check(struct presence *p, int64_t now)
{
    struct presence_seq_stats s;
    presence_check_gaps(p, now, GRACE, &s);
    return s;
}

static void tel(struct presence *p, uint64_t seq, size_t n, int64_t now)
{
    presence_telemetry(p, "site", "gw", seq, n, false, now);
}

static void test_in_order_and_duplicates(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 10, 0);
    tel(p, 11, 10, 0);
    tel(p, 5, 6, 0); /* 5..10 again: a QoS 1 redelivery */
    struct presence_seq_stats s = check(p, 5 * GRACE);
    assert_int_equal(s.readings_pending, 0);
    assert_int_equal(s.readings_duplicate, 6);
    assert_int_equal(s.gaps_reported, 0);
    presence_free(p);
}

static void test_gap_filled_by_backlog(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 10, 0);
    tel(p, 16, 5, 0); /* live data ahead of 11..15 */
    assert_int_equal(check(p, 1).readings_pending, 5);
    tel(p, 11, 5, 10);
    struct presence_seq_stats s = check(p, 5 * GRACE);
    assert_int_equal(s.readings_pending, 0);
    assert_int_equal(s.readings_missing, 0);
    assert_int_equal(s.readings_duplicate, 0);
    presence_free(p);
}

static void test_middle_splits_a_gap(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 10, 0);
    tel(p, 31, 10, 0); /* gap 11..30 */
    tel(p, 20, 3, 0);  /* 20..22 arrive: 11..19 and 23..30 remain */
    assert_int_equal(check(p, 1).readings_pending, 17);
    tel(p, 11, 9, 0);
    tel(p, 23, 8, 0);
    assert_int_equal(check(p, 1).readings_pending, 0);
    presence_free(p);
}

static void test_reported_after_grace_only(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 10, 0);
    tel(p, 16, 5, 0); /* 11..15 open since 0 */
    assert_int_equal(check(p, GRACE - 1).gaps_reported, 0);
    struct presence_seq_stats s = check(p, GRACE);
    assert_int_equal(s.gaps_reported, 1);
    assert_int_equal(s.readings_missing, 5);
    assert_int_equal(s.readings_pending, 0);
    /* reported once: a late arrival is then a duplicate, not a second report */
    tel(p, 11, 5, GRACE + 1);
    s = check(p, 3 * GRACE);
    assert_int_equal(s.gaps_reported, 1);
    assert_int_equal(s.readings_duplicate, 5);
    presence_free(p);
}

static void test_replay_keeps_gaps_open(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 10, 0);
    tel(p, 100, 5, 0);                                            /* 11..99 open */
    presence_telemetry(p, "site", "gw", 11, 20, true, GRACE / 2); /* replay in progress */
    assert_int_equal(check(p, GRACE).gaps_reported, 0);
    assert_int_equal(check(p, GRACE).readings_pending, 69);
    struct presence_seq_stats s = check(p, GRACE / 2 + GRACE);
    assert_int_equal(s.gaps_reported, 1);
    assert_int_equal(s.readings_missing, 69);
    presence_free(p);
}

static void test_numbering_restart(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel(p, 1, 100, 0);
    tel(p, 150, 10, 0); /* 101..149 open */
    tel(p, 1, 5, 1);    /* the gateway's spool was reset */
    struct presence_seq_stats s = check(p, 2);
    assert_int_equal(s.readings_duplicate, 0);
    assert_int_equal(s.gaps_reported, 1); /* the open gap is reported, not kept forever */
    assert_int_equal(s.readings_missing, 49);
    tel(p, 6, 5, 3);
    assert_int_equal(check(p, 4).readings_pending, 0);
    presence_free(p);
}

static void test_gateways_are_separate(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    presence_telemetry(p, "site", "gw-a", 1, 10, false, 0);
    presence_telemetry(p, "site", "gw-b", 50, 10, false, 0); /* first seen: no gap */
    presence_telemetry(p, "site", "gw-a", 11, 10, false, 0);
    struct presence_seq_stats s = check(p, 5 * GRACE);
    assert_int_equal(s.readings_pending + s.readings_missing + s.readings_duplicate, 0);
    presence_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order_and_duplicates),
        cmocka_unit_test(test_gap_filled_by_backlog),
        cmocka_unit_test(test_middle_splits_a_gap),
        cmocka_unit_test(test_reported_after_grace_only),
        cmocka_unit_test(test_replay_keeps_gaps_open),
        cmocka_unit_test(test_numbering_restart),
        cmocka_unit_test(test_gateways_are_separate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
