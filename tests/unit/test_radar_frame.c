/* The R60ABD1-family frame parser and decoder (drivers/radar/radar_frame.h): good
 * frames, frames split byte by byte, bad checksum, bad tail, oversized
 * length, garbage and false headers between frames, and every report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "radar_frame.h"

#include <string.h>

/* Captured from a real MR60BHA1 (heartbeat; heart rate 89 bpm): the
 * checksum rule and layout are the module's, not ours. */
static const uint8_t real_heartbeat[] = {0x53, 0x59, 0x01, 0x01, 0x00,
                                         0x01, 0x0F, 0xBE, 0x54, 0x43};
static const uint8_t real_hr89[] = {0x53, 0x59, 0x85, 0x02, 0x00, 0x01, 0x59, 0x8D, 0x54, 0x43};

/* Feeds buf in chunks of chunk bytes; collects up to max frames. */
static size_t feed_all(struct radar_parser *p, const uint8_t *buf, size_t n, size_t chunk,
                       struct radar_frame *frames, size_t max)
{
    size_t got_n = 0;
    for (size_t off = 0; off < n;) {
        size_t len = n - off < chunk ? n - off : chunk;
        const uint8_t *b = buf + off;
        off += len;
        struct radar_frame f;
        bool got = false;
        while (len > 0 || got) {
            size_t k = radar_parser_feed(p, b, len, &f, &got);
            b += k;
            len -= k;
            if (got && got_n < max)
                frames[got_n++] = f;
        }
    }
    return got_n;
}

static size_t frame(uint8_t *out, uint8_t ctl, uint8_t cmd, uint8_t v)
{
    return radar_frame_build(out, RADAR_FRAME_OVERHEAD + 1, ctl, cmd, &v, 1);
}

static void test_build_matches_real_frames(void **state)
{
    (void)state;
    uint8_t b[16];
    assert_int_equal(frame(b, 0x01, 0x01, 0x0F), sizeof real_heartbeat);
    assert_memory_equal(b, real_heartbeat, sizeof real_heartbeat);
    assert_int_equal(frame(b, 0x85, 0x02, 89), sizeof real_hr89);
    assert_memory_equal(b, real_hr89, sizeof real_hr89);
    assert_int_equal(radar_frame_build(b, 9, 0x80, 0x01, b, 1), 0); /* does not fit */
}

static void test_good_frames(void **state)
{
    (void)state;
    struct radar_parser *p = radar_parser_new();
    uint8_t buf[64];
    size_t n = 0;
    memcpy(buf, real_heartbeat, sizeof real_heartbeat);
    n += sizeof real_heartbeat;
    memcpy(buf + n, real_hr89, sizeof real_hr89);
    n += sizeof real_hr89;
    uint8_t two[] = {0x10, 0x20};
    n += radar_frame_build(buf + n, sizeof buf - n, 0x80, 0x04, two, 2);  /* distance */
    n += radar_frame_build(buf + n, sizeof buf - n, 0x02, 0xA1, NULL, 0); /* empty data */
    struct radar_frame f[8];
    assert_int_equal(feed_all(p, buf, n, n, f, 8), 4);
    assert_int_equal(f[0].control, 0x01);
    assert_int_equal(f[1].control, 0x85);
    assert_int_equal(f[1].command, 0x02);
    assert_int_equal(f[1].len, 1);
    assert_int_equal(f[1].data[0], 89);
    assert_int_equal(f[2].len, 2);
    assert_int_equal(f[2].data[1], 0x20);
    assert_int_equal(f[3].len, 0);
    const struct radar_parser_stats *st = radar_parser_stats(p);
    assert_int_equal(st->frames, 4);
    assert_int_equal(st->garbage, 0);
    assert_int_equal(st->bytes, n);
    radar_parser_free(p);
}

/* Every chunk size from 1 byte up gives the same frames. */
static void test_split_reads(void **state)
{
    (void)state;
    uint8_t buf[200];
    size_t n = 0;
    for (int i = 0; i < 10; i++)
        n += frame(buf + n, 0x80, 0x03, (uint8_t)(i * 10));
    for (size_t chunk = 1; chunk <= n; chunk++) {
        struct radar_parser *p = radar_parser_new();
        struct radar_frame f[16];
        assert_int_equal(feed_all(p, buf, n, chunk, f, 16), 10);
        for (int i = 0; i < 10; i++)
            assert_int_equal(f[i].data[0], i * 10);
        radar_parser_free(p);
    }
}

static void test_bad_checksum(void **state)
{
    (void)state;
    struct radar_parser *p = radar_parser_new();
    uint8_t buf[32];
    size_t n = frame(buf, 0x84, 0x01, 0);
    buf[n - 3] ^= 0x01;
    n += frame(buf + n, 0x84, 0x01, 1);
    struct radar_frame f[4];
    assert_int_equal(feed_all(p, buf, n, 1, f, 4), 1);
    assert_int_equal(f[0].data[0], 1);
    assert_int_equal(radar_parser_stats(p)->rejected[RADAR_REJ_CHECKSUM], 1);
    radar_parser_free(p);
}

static void test_bad_tail(void **state)
{
    (void)state;
    struct radar_parser *p = radar_parser_new();
    uint8_t buf[32];
    size_t n = frame(buf, 0x80, 0x01, 1);
    buf[n - 1] = 0x44; /* 54 44 */
    size_t m = frame(buf + n, 0x80, 0x01, 0);
    buf[n + m - 2] = 0x55; /* 55 43 */
    n += m;
    n += frame(buf + n, 0x80, 0x01, 1);
    struct radar_frame f[4];
    assert_int_equal(feed_all(p, buf, n, 3, f, 4), 1);
    assert_int_equal(f[0].data[0], 1);
    assert_int_equal(radar_parser_stats(p)->rejected[RADAR_REJ_TAIL], 2);
    radar_parser_free(p);
}

static void test_oversized_length(void **state)
{
    (void)state;
    struct radar_parser *p = radar_parser_new();
    uint8_t buf[64] = {0x53, 0x59, 0x80, 0x01, 0x01, 0x01}; /* 257 bytes of data */
    size_t n = 6;
    n += frame(buf + n, 0x85, 0x02, 70);
    uint8_t huge[] = {0x53, 0x59, 0x80, 0x01, 0xFF, 0xFF};
    memcpy(buf + n, huge, sizeof huge);
    n += sizeof huge;
    n += frame(buf + n, 0x85, 0x02, 71);
    struct radar_frame f[4];
    assert_int_equal(feed_all(p, buf, n, 1, f, 4), 2);
    assert_int_equal(f[0].data[0], 70);
    assert_int_equal(f[1].data[0], 71);
    assert_int_equal(radar_parser_stats(p)->rejected[RADAR_REJ_LENGTH], 2);
    /* the longest accepted data passes */
    static uint8_t big[RADAR_FRAME_OVERHEAD + RADAR_FRAME_MAX_DATA];
    uint8_t data[RADAR_FRAME_MAX_DATA] = {0};
    size_t bn = radar_frame_build(big, sizeof big, 0x84, 0x0D, data, sizeof data);
    assert_int_equal(bn, sizeof big);
    assert_int_equal(feed_all(p, big, bn, 7, f, 4), 1);
    assert_int_equal(f[0].len, RADAR_FRAME_MAX_DATA);
    radar_parser_free(p);
}

/* Noise between frames, including false 53 59 headers whose length field
 * would swallow the real frame behind them: every real frame is found. */
static void test_garbage_between_frames(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = 0;
    static const uint8_t noise[][8] = {
        {0x00, 0xFF, 0x12},
        {0x53, 0x53, 0x59, 0x80, 0x01, 0x00, 0x05}, /* false header, length 5 */
        {0x53},
        {0x54, 0x43, 0x59},
        {0x53, 0x59, 0x00, 0x00, 0x00}, /* cut header */
    };
    static const size_t nlen[] = {3, 7, 1, 3, 5};
    for (int i = 0; i < 5; i++) {
        memcpy(buf + n, noise[i], nlen[i]);
        n += nlen[i];
        n += frame(buf + n, 0x81, 0x02, (uint8_t)(12 + i));
    }
    /* The last false header claims 0x0053 bytes: the frame behind it comes
     * out once that many more bytes have shown the claim false. */
    for (int i = 0; i < 10; i++)
        n += frame(buf + n, 0x80, 0x03, (uint8_t)i);
    for (size_t chunk = 1; chunk <= 16; chunk++) {
        struct radar_parser *p = radar_parser_new();
        struct radar_frame f[16];
        assert_int_equal(feed_all(p, buf, n, chunk, f, 16), 15);
        for (int i = 0; i < 5; i++)
            assert_int_equal(f[i].data[0], 12 + i);
        for (int i = 0; i < 10; i++)
            assert_int_equal(f[5 + i].data[0], i);
        assert_true(radar_parser_stats(p)->garbage > 0);
        radar_parser_free(p);
    }
}

static void test_reset_forgets_partial(void **state)
{
    (void)state;
    struct radar_parser *p = radar_parser_new();
    uint8_t buf[16];
    size_t n = frame(buf, 0x80, 0x01, 1);
    struct radar_frame f[2];
    assert_int_equal(feed_all(p, buf, 5, 5, f, 2), 0);
    radar_parser_reset(p);
    assert_int_equal(feed_all(p, buf, n, n, f, 2), 1);
    radar_parser_free(p);
}

/* Every report of radar_frame.h's table, as a report and as a query answer. */
static void test_decode_reports(void **state)
{
    (void)state;
    static const struct {
        uint8_t ctl, cmd, v;
        int result, metric;
        bool known;
        double value;
    } cases[] = {
        {0x80, 0x01, 0, RADAR_DEC_METRIC, RADAR_M_PRESENCE, true, 0},
        {0x80, 0x01, 1, RADAR_DEC_METRIC, RADAR_M_PRESENCE, true, 1},
        {0x80, 0x01, 2, RADAR_DEC_INVALID, 0, false, 0},
        {0x80, 0x02, 0, RADAR_DEC_METRIC, RADAR_M_MOTION, true, 0},
        {0x80, 0x02, 2, RADAR_DEC_METRIC, RADAR_M_MOTION, true, 2},
        {0x80, 0x02, 3, RADAR_DEC_INVALID, 0, false, 0},
        {0x80, 0x03, 100, RADAR_DEC_METRIC, RADAR_M_MOVEMENT, true, 100},
        {0x80, 0x03, 101, RADAR_DEC_INVALID, 0, false, 0},
        {0x81, 0x01, 1, RADAR_DEC_METRIC, RADAR_M_BREATH_STATE, true, 1},
        {0x81, 0x01, 2, RADAR_DEC_METRIC, RADAR_M_BREATH_STATE, true, 2},
        {0x81, 0x01, 3, RADAR_DEC_METRIC, RADAR_M_BREATH_STATE, true, 3},
        {0x81, 0x01, 4, RADAR_DEC_METRIC, RADAR_M_BREATH_STATE, true, 0},
        {0x81, 0x01, 0, RADAR_DEC_INVALID, 0, false, 0},
        {0x81, 0x02, 16, RADAR_DEC_METRIC, RADAR_M_RR, true, 16},
        {0x85, 0x02, 89, RADAR_DEC_METRIC, RADAR_M_HR, true, 89},
        {0x84, 0x01, 0, RADAR_DEC_METRIC, RADAR_M_IN_BED, true, 0},
        {0x84, 0x01, 1, RADAR_DEC_METRIC, RADAR_M_IN_BED, true, 1},
        {0x84, 0x01, 2, RADAR_DEC_METRIC, RADAR_M_IN_BED, false, 0},
        {0x84, 0x01, 3, RADAR_DEC_INVALID, 0, false, 0},
        {0x84, 0x02, 0, RADAR_DEC_METRIC, RADAR_M_SLEEP_STAGE, true, 3},
        {0x84, 0x02, 1, RADAR_DEC_METRIC, RADAR_M_SLEEP_STAGE, true, 2},
        {0x84, 0x02, 2, RADAR_DEC_METRIC, RADAR_M_SLEEP_STAGE, true, 1},
        {0x84, 0x02, 3, RADAR_DEC_METRIC, RADAR_M_SLEEP_STAGE, true, 0},
        {0x84, 0x02, 4, RADAR_DEC_INVALID, 0, false, 0},
        /* query answers */
        {0x84, 0x81, 1, RADAR_DEC_METRIC, RADAR_M_IN_BED, true, 1},
        {0x80, 0x81, 1, RADAR_DEC_METRIC, RADAR_M_PRESENCE, true, 1},
        {0x85, 0x82, 60, RADAR_DEC_METRIC, RADAR_M_HR, true, 60},
        /* frames without a metric */
        {0x01, 0x01, 0x0F, RADAR_DEC_NONE, 0, false, 0},
        {0x80, 0x04, 0, RADAR_DEC_NONE, 0, false, 0},
        {0x85, 0x05, 0, RADAR_DEC_NONE, 0, false, 0},
        {0x84, 0x06, 80, RADAR_DEC_NONE, 0, false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct radar_frame f = {.control = cases[i].ctl, .command = cases[i].cmd, .len = 1};
        f.data[0] = cases[i].v;
        struct radar_update u = {0};
        int r = radar_decode(&f, &u);
        if (r != cases[i].result)
            fail_msg("case %zu: %02x %02x %u -> %d, want %d", i, cases[i].ctl, cases[i].cmd,
                     cases[i].v, r, cases[i].result);
        if (r != RADAR_DEC_METRIC)
            continue;
        assert_int_equal(u.metric, cases[i].metric);
        assert_int_equal(u.known, cases[i].known);
        if (u.known)
            assert_true(u.value == cases[i].value);
    }
    /* a metric report of the wrong length */
    struct radar_frame f = {.control = 0x85, .command = 0x02, .len = 2};
    struct radar_update u;
    assert_int_equal(radar_decode(&f, &u), RADAR_DEC_INVALID);
    f.len = 0;
    assert_int_equal(radar_decode(&f, &u), RADAR_DEC_INVALID);
}

static void test_metric_names(void **state)
{
    (void)state;
    for (int m = 0; m < RADAR_M_COUNT; m++)
        assert_int_equal(radar_metric_find(radar_metric_name(m)), m);
    assert_int_equal(radar_metric_find("in_bed"), RADAR_M_IN_BED);
    assert_int_equal(radar_metric_find("temperature"), -1);
    assert_null(radar_metric_name(RADAR_M_COUNT));
    assert_string_equal(radar_reject_name(RADAR_REJ_CHECKSUM), "checksum");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_matches_real_frames),
        cmocka_unit_test(test_good_frames),
        cmocka_unit_test(test_split_reads),
        cmocka_unit_test(test_bad_checksum),
        cmocka_unit_test(test_bad_tail),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_garbage_between_frames),
        cmocka_unit_test(test_reset_forgets_partial),
        cmocka_unit_test(test_decode_reports),
        cmocka_unit_test(test_metric_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
