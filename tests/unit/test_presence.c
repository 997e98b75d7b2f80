/* The hub's tracking of each gateway's reading numbers: gaps open on a jump,
 * fill when the backlog arrives, split when the middle arrives, count
 * duplicates, and are reported lost only after the grace time without a
 * replay from that gateway; or, for a gateway that says the oldest number it
 * still holds, exactly what is below it and was never received, at once,
 * from its first number on, for readings and alerts alike; and what the hub
 * knew survives its restart (presence_save, presence_load). */
#include "presence.h"
#include "codec.h"
#include "err.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    presence_telemetry(p, "site", "gw", seq, n, false, 0, now);
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
    tel(p, 100, 5, 0);                                               /* 11..99 open */
    presence_telemetry(p, "site", "gw", 11, 20, true, 0, GRACE / 2); /* replay in progress */
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
    presence_telemetry(p, "site", "gw-a", 1, 10, false, 0, 0);
    presence_telemetry(p, "site", "gw-b", 50, 10, false, 0, 0); /* first seen: no gap */
    presence_telemetry(p, "site", "gw-a", 11, 10, false, 0, 0);
    struct presence_seq_stats s = check(p, 5 * GRACE);
    assert_int_equal(s.readings_pending + s.readings_missing + s.readings_duplicate, 0);
    presence_free(p);
}

static void tel_old(struct presence *p, uint64_t seq, size_t n, uint64_t oldest, int64_t now)
{
    presence_telemetry(p, "site", "gw", seq, n, false, oldest, now);
}

static void test_oldest_settles_gaps_exactly(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    tel_old(p, 1, 10, 1, 0);
    tel_old(p, 31, 10, 11, 0); /* 11..30 open: the gateway still holds them */
    struct presence_seq_stats s = check(p, 100 * GRACE);
    assert_int_equal(s.readings_pending, 20); /* no grace for a gateway that says */
    assert_int_equal(s.readings_missing, 0);
    tel_old(p, 41, 10, 21, 0); /* 11..20 evicted: lost; 21..30 still held */
    s = check(p, 0);
    assert_int_equal(s.readings_missing, 10);
    assert_int_equal(s.readings_pending, 10);
    tel_old(p, 21, 10, 21, 0); /* the rest comes */
    s = check(p, 0);
    assert_int_equal(s.readings_missing, 10);
    assert_int_equal(s.readings_pending, 0);
    /* one below: oldest 20 again changes nothing (a stale retained birth) */
    tel_old(p, 51, 1, 20, 0);
    assert_int_equal(check(p, 0).readings_missing, 10);
    presence_free(p);
}

static void test_first_number_counts_from_one(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    /* the hub starts late: the first it sees is 101, the gateway holds from 61 */
    tel_old(p, 101, 10, 61, 0);
    struct presence_seq_stats s = check(p, 0);
    assert_int_equal(s.readings_missing, 60); /* 1..60: no one holds them */
    assert_int_equal(s.readings_pending, 0);  /* 61..100: unknown yet, not pending */
    tel_old(p, 61, 40, 61, 0);
    s = check(p, 100 * GRACE);
    assert_int_equal(s.readings_missing, 60);
    assert_int_equal(s.readings_duplicate, 0);
    /* a birth alone, before any telemetry: everything below its oldest is lost */
    struct ch_status st = {.site = "site",
                           .gateway = "gw-b",
                           .online = true,
                           .ts_ms = 5,
                           .oldest_reading = 7,
                           .oldest_alert = 3};
    presence_status(p, &st, 0);
    s = check(p, 0);
    assert_int_equal(s.readings_missing, 66);
    assert_int_equal(s.alerts_missing, 2);
    presence_free(p);
}

static void test_alerts_numbered_apart(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    presence_alert(p, "site", "gw", 1, 1, 0);
    presence_alert(p, "site", "gw", 4, 2, 0); /* 1 acknowledged, 2..3 held and not here */
    struct presence_seq_stats s = check(p, 0);
    assert_int_equal(s.alerts_pending, 2);
    assert_int_equal(s.alerts_missing, 0);
    presence_alert(p, "site", "gw", 5, 4, 0); /* 2..3 evicted */
    s = check(p, 0);
    assert_int_equal(s.alerts_pending, 0);
    assert_int_equal(s.alerts_missing, 2);
    assert_int_equal(s.readings_missing + s.readings_pending, 0);
    presence_alert(p, "site", "gw", 0, 0, 0); /* unnumbered: ignored */
    assert_int_equal(check(p, 0).alerts_missing, 2);
    presence_free(p);
}

/* The hub's view follows statuses only: a birth's oldest numbers judge nothing there. */
static void test_statuses_only(void **state)
{
    (void)state;
    struct presence *p = presence_new();
    presence_statuses_only(p);
    struct ch_status st = {.site = "site",
                           .gateway = "gw",
                           .online = true,
                           .ts_ms = 5,
                           .oldest_reading = 700,
                           .oldest_alert = 30};
    presence_status(p, &st, 0);
    struct presence_seq_stats s = check(p, 0);
    assert_int_equal(s.readings_missing + s.alerts_missing + s.gaps_reported, 0);
    assert_int_equal(presence_online(p), 1);
    presence_free(p);
}

static void test_saved_across_restart(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_presence.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/presence.json", dir);
    struct presence *p = presence_new();
    assert_int_equal(presence_load(p, path), 0); /* no file: a first start */
    tel_old(p, 1, 10, 1, 0);
    tel_old(p, 21, 10, 1, 0); /* 11..20 pending */
    assert_int_equal(presence_save(p, path), 0);
    presence_free(p);

    /* a restarted hub: 1..10 and 21..30 were received before, 11..20 not */
    p = presence_new();
    assert_int_equal(presence_load(p, path), 0);
    assert_int_equal(check(p, 0).readings_pending, 10);
    tel_old(p, 31, 10, 11, 0); /* the gateway freed 1..10: not lost, received before */
    struct presence_seq_stats s = check(p, 0);
    assert_int_equal(s.readings_missing, 0);
    assert_int_equal(s.readings_pending, 10);
    tel_old(p, 41, 1, 21, 0); /* 11..20 evicted */
    assert_int_equal(check(p, 0).readings_missing, 10);
    presence_free(p);

    /* a damaged file is refused, and the start is empty */
    FILE *f = fopen(path, "w");
    fputs("{\"format\":\"carehub-presence/1\",\"gateways\":{\"a/b\":{\"readings\":1}}}", f);
    fclose(f);
    p = presence_new();
    assert_int_equal(presence_load(p, path), CH_EINVAL);
    presence_free(p);
    unlink(path);
    rmdir(dir);
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
        cmocka_unit_test(test_oldest_settles_gaps_exactly),
        cmocka_unit_test(test_first_number_counts_from_one),
        cmocka_unit_test(test_alerts_numbered_apart),
        cmocka_unit_test(test_statuses_only),
        cmocka_unit_test(test_saved_across_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
