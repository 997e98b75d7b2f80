/* care-sim request framing: PDU lengths, MBAP headers and the RTU
 * framer on split, merged, garbage and bad-CRC input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mbcrc.h"
#include "sim_frame.h"

#include <string.h>

#define SILENCE 50

/* Builds an RTU request: addr, fc, a, q (+ CRC). Returns its length. */
static size_t req(uint8_t *out, uint8_t addr, uint8_t fc, uint16_t a, uint16_t q)
{
    uint8_t f[] = {addr, fc, (uint8_t)(a >> 8), (uint8_t)a, (uint8_t)(q >> 8), (uint8_t)q};
    memcpy(out, f, sizeof f);
    uint16_t crc = mb_crc16(out, 6);
    out[6] = (uint8_t)crc;
    out[7] = (uint8_t)(crc >> 8);
    return 8;
}

static void test_pdu_len(void **state)
{
    (void)state;
    static const struct {
        uint8_t pdu[8];
        size_t n;
        int want;
    } cases[] = {
        {{0x03}, 1, 5},
        {{0x01}, 1, 5},
        {{0x06, 0, 1, 0, 5}, 5, 5},
        {{0x10, 0, 0, 0, 2}, 5, 0},     /* byte count not here yet */
        {{0x10, 0, 0, 0, 2, 4}, 6, 10}, /* 6 + 4 data bytes */
        {{0x0F, 0, 0, 0, 10, 2}, 6, 8}, /* 10 coils in 2 bytes */
        {{0x2B, 0x0E}, 2, -1},          /* not framed */
        {{0x00}, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(sim_frame_pdu_len(cases[i].pdu, cases[i].n), cases[i].want);
}

static void test_mbap_len(void **state)
{
    (void)state;
    const uint8_t ok[] = {0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2};
    assert_int_equal(sim_frame_mbap_len(ok, 5), 0);
    assert_int_equal(sim_frame_mbap_len(ok, sizeof ok), 12);
    const uint8_t proto[] = {0, 1, 0, 1, 0, 6};
    assert_int_equal(sim_frame_mbap_len(proto, 6), -1);
    const uint8_t tiny[] = {0, 1, 0, 0, 0, 1};
    assert_int_equal(sim_frame_mbap_len(tiny, 6), -1);
    const uint8_t huge[] = {0, 1, 0, 0, 0x01, 0x00}; /* 256 > 1 + 253 */
    assert_int_equal(sim_frame_mbap_len(huge, 6), -1);
    const uint8_t http[] = {'G', 'E', 'T', ' ', '/', ' '};
    assert_int_equal(sim_frame_mbap_len(http, 6), -1);
}

static void test_framer_whole_frame(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[8], out[SIM_RTU_MAX_ADU];
    size_t n = req(in, 1, 3, 0, 2);
    assert_int_equal(sim_rtu_framer_deadline(f), -1);
    sim_rtu_framer_feed(f, in, n, 1000);
    assert_int_equal(sim_rtu_framer_next(f, out, 1000), 8);
    assert_memory_equal(out, in, 8);
    assert_int_equal(sim_rtu_framer_next(f, out, 1000), 0);
    assert_int_equal(sim_rtu_framer_stats(f)->frames, 1);
    sim_rtu_framer_free(f);
}

static void test_framer_split_frame(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[8], out[SIM_RTU_MAX_ADU];
    req(in, 0xFE, 4, 0, 4);
    /* byte by byte, 5 ms apart: nothing until the last byte */
    for (size_t i = 0; i < 7; i++) {
        sim_rtu_framer_feed(f, in + i, 1, 1000 + 5 * (int64_t)i);
        assert_int_equal(sim_rtu_framer_next(f, out, 1000 + 5 * (int64_t)i), 0);
    }
    assert_int_equal(sim_rtu_framer_deadline(f), 1030 + SILENCE);
    sim_rtu_framer_feed(f, in + 7, 1, 1035);
    assert_int_equal(sim_rtu_framer_next(f, out, 1035), 8);
    assert_memory_equal(out, in, 8);
    assert_int_equal(sim_rtu_framer_stats(f)->dropped, 0);
    sim_rtu_framer_free(f);
}

static void test_framer_two_frames_one_read(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[16], out[SIM_RTU_MAX_ADU];
    req(in, 1, 3, 0, 2);
    req(in + 8, 2, 4, 1, 2);
    sim_rtu_framer_feed(f, in, 16, 0);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 8);
    assert_memory_equal(out, in, 8);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 8);
    assert_memory_equal(out, in + 8, 8);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 0);
    sim_rtu_framer_free(f);
}

static void test_framer_garbage_before_frame(void **state)
{
    (void)state;
    uint8_t in[32], out[SIM_RTU_MAX_ADU];
    /* junk that starts like a read (its CRC fails), and junk with a function code the
     * framer cannot size: either way the request behind it comes out at once */
    static const uint8_t read_like[] = {0x01, 0x03, 0xFF};
    static const uint8_t unsized[] = {0x13, 0x37, 0x03, 0xFF, 0x00};
    const struct {
        const uint8_t *junk;
        size_t n;
    } cases[] = {{read_like, sizeof read_like}, {unsized, sizeof unsized}};
    for (size_t c = 0; c < 2; c++) {
        struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
        memcpy(in, cases[c].junk, cases[c].n);
        req(in + cases[c].n, 2, 4, 1, 2);
        sim_rtu_framer_feed(f, in, cases[c].n + 8, 0);
        assert_int_equal(sim_rtu_framer_next(f, out, 0), 8);
        assert_memory_equal(out, in + cases[c].n, 8);
        assert_int_equal(sim_rtu_framer_stats(f)->dropped, cases[c].n);
        assert_int_equal(sim_rtu_framer_next(f, out, 0), 0);
        sim_rtu_framer_free(f);
    }
}

static void test_framer_bad_crc_dropped(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[8], out[SIM_RTU_MAX_ADU];
    req(in, 1, 3, 0, 2);
    in[7] ^= 0x55;
    sim_rtu_framer_feed(f, in, 8, 0);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 0);
    /* after the silence every byte of it is gone, and no frame came out */
    assert_int_equal(sim_rtu_framer_next(f, out, SILENCE), 0);
    assert_int_equal(sim_rtu_framer_deadline(f), -1);
    assert_int_equal(sim_rtu_framer_stats(f)->frames, 0);
    assert_int_equal(sim_rtu_framer_stats(f)->dropped, 8);
    assert_true(sim_rtu_framer_stats(f)->bad_crc >= 1);
    /* and the line works again */
    req(in, 1, 3, 0, 2);
    sim_rtu_framer_feed(f, in, 8, 200);
    assert_int_equal(sim_rtu_framer_next(f, out, 200), 8);
    sim_rtu_framer_free(f);
}

static void test_framer_incomplete_garbage_then_silence(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t out[SIM_RTU_MAX_ADU], in[8];
    /* an FC16 header promising 200 data bytes that never come */
    const uint8_t partial[] = {1, 0x10, 0, 0, 0, 100, 200, 1, 2};
    sim_rtu_framer_feed(f, partial, sizeof partial, 0);
    assert_int_equal(sim_rtu_framer_next(f, out, 10), 0);
    assert_int_equal(sim_rtu_framer_space(f), 2 * SIM_RTU_MAX_ADU - sizeof partial);
    /* silence: dropped */
    assert_int_equal(sim_rtu_framer_next(f, out, SILENCE), 0);
    assert_int_equal(sim_rtu_framer_deadline(f), -1);
    req(in, 1, 3, 1, 1);
    sim_rtu_framer_feed(f, in, 8, 500);
    assert_int_equal(sim_rtu_framer_next(f, out, 500), 8);
    assert_memory_equal(out, in, 8);
    sim_rtu_framer_free(f);
}

static void test_framer_fc16(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[16] = {1, 0x10, 0, 0, 0, 2, 4, 0, 9, 0, 10}, out[SIM_RTU_MAX_ADU];
    uint16_t crc = mb_crc16(in, 11);
    in[11] = (uint8_t)crc;
    in[12] = (uint8_t)(crc >> 8);
    sim_rtu_framer_feed(f, in, 6, 0);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 0);
    sim_rtu_framer_feed(f, in + 6, 7, 1);
    assert_int_equal(sim_rtu_framer_next(f, out, 1), 13); /* 9 + byte count 4 */
    sim_rtu_framer_free(f);
}

static void test_framer_unknown_function_at_silence(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t in[4] = {1, 0x11}, out[SIM_RTU_MAX_ADU];
    uint16_t crc = mb_crc16(in, 2);
    in[2] = (uint8_t)crc;
    in[3] = (uint8_t)(crc >> 8);
    sim_rtu_framer_feed(f, in, 4, 0);
    assert_int_equal(sim_rtu_framer_next(f, out, 0), 0); /* its end is not known yet */
    assert_int_equal(sim_rtu_framer_next(f, out, SILENCE), 4);
    assert_memory_equal(out, in, 4);
    sim_rtu_framer_free(f);
}

static void test_framer_full_of_noise_keeps_room(void **state)
{
    (void)state;
    struct sim_rtu_framer *f = sim_rtu_framer_new(SILENCE);
    uint8_t noise[64], out[SIM_RTU_MAX_ADU];
    uint32_t x = 12345;
    for (int round = 0; round < 40; round++) {
        size_t room = sim_rtu_framer_space(f);
        assert_true(room > 0);
        for (size_t i = 0; i < sizeof noise; i++) {
            x = x * 1103515245u + 12345u;
            noise[i] = (uint8_t)(x >> 16) | 0x10; /* FC 0x10.. mostly unknown or FC16 */
        }
        sim_rtu_framer_feed(f, noise, room < sizeof noise ? room : sizeof noise, round);
        while (sim_rtu_framer_next(f, out, round) > 0)
            ;
    }
    assert_true(sim_rtu_framer_space(f) > 0);
    sim_rtu_framer_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pdu_len),
        cmocka_unit_test(test_mbap_len),
        cmocka_unit_test(test_framer_whole_frame),
        cmocka_unit_test(test_framer_split_frame),
        cmocka_unit_test(test_framer_two_frames_one_read),
        cmocka_unit_test(test_framer_garbage_before_frame),
        cmocka_unit_test(test_framer_bad_crc_dropped),
        cmocka_unit_test(test_framer_incomplete_garbage_then_silence),
        cmocka_unit_test(test_framer_fc16),
        cmocka_unit_test(test_framer_unknown_function_at_silence),
        cmocka_unit_test(test_framer_full_of_noise_keeps_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
