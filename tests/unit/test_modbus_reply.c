/* The driver's own check of read replies (the path for slaves 248..255):
 * good replies over RTU and TCP, exceptions, and each kind of malformed
 * reply, which must be CH_EPROTO and never a wrong value. */
#include "drv_modbus.h"
#include "err.h"
#include "mbcrc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* Appends the CRC (low byte first) to an RTU frame of n bytes; returns n + 2. */
static size_t with_crc(uint8_t *f, size_t n)
{
    uint16_t c = mb_crc16(f, n);
    f[n] = (uint8_t)(c & 0xFF);
    f[n + 1] = (uint8_t)(c >> 8);
    return n + 2;
}

static const struct regmap_req fc4_two = {.fc = 4, .start = 0, .count = 2};

static void test_rtu_good(void **state)
{
    (void)state;
    uint8_t f[16] = {0xFE, 0x04, 0x04, 0x00, 0x00, 0x02, 0x1C}; /* status 0, CO2 540 */
    size_t n = with_crc(f, 7);
    uint16_t w[2] = {9, 9};
    assert_int_equal(drv_modbus_parse_read_reply(f, n, true, 0xFE, &fc4_two, w), 0);
    assert_int_equal(w[0], 0);
    assert_int_equal(w[1], 540);
}

static void test_tcp_good_and_bits(void **state)
{
    (void)state;
    uint8_t f[] = {0, 0, 0, 0, 0, 7, 0xFE, 0x04, 0x04, 0x12, 0x34, 0xAB, 0xCD};
    uint16_t w[2];
    assert_int_equal(drv_modbus_parse_read_reply(f, sizeof f, false, 0xFE, &fc4_two, w), 0);
    assert_int_equal(w[0], 0x1234);
    assert_int_equal(w[1], 0xABCD);

    struct regmap_req bits = {.fc = 2, .start = 0, .count = 10};
    uint8_t b[16] = {0xF8, 0x02, 0x02, 0x05, 0x02}; /* 1010 0000 | 01 */
    size_t n = with_crc(b, 5);
    uint16_t bw[10];
    assert_int_equal(drv_modbus_parse_read_reply(b, n, true, 0xF8, &bits, bw), 0);
    const uint16_t want[10] = {1, 0, 1, 0, 0, 0, 0, 0, 0, 1};
    assert_memory_equal(bw, want, sizeof want);
}

static void test_exception(void **state)
{
    (void)state;
    uint8_t f[8] = {0xFE, 0x84, 0x04};
    size_t n = with_crc(f, 3);
    uint16_t w[2];
    assert_int_equal(drv_modbus_parse_read_reply(f, n, true, 0xFE, &fc4_two, w), CH_EEXCEPTION);
    f[1] = 0x83; /* an exception for another function is garbage */
    n = with_crc(f, 3);
    assert_int_equal(drv_modbus_parse_read_reply(f, n, true, 0xFE, &fc4_two, w), CH_EPROTO);
}

static void test_malformed(void **state)
{
    (void)state;
    uint16_t w[2];
    uint8_t good[16] = {0xFE, 0x04, 0x04, 0x00, 0x00, 0x02, 0x1C};
    size_t n = with_crc(good, 7);
    uint8_t f[16];

    memcpy(f, good, n);
    f[n - 1] ^= 0x01; /* bad CRC */
    assert_int_equal(drv_modbus_parse_read_reply(f, n, true, 0xFE, &fc4_two, w), CH_EPROTO);

    memcpy(f, good, n); /* another slave answered */
    assert_int_equal(drv_modbus_parse_read_reply(f, n, true, 0xFD, &fc4_two, w), CH_EPROTO);

    /* truncated at every length: never accepted, never read past the end */
    for (size_t len = 0; len < n; len++)
        assert_int_equal(drv_modbus_parse_read_reply(good, len, true, 0xFE, &fc4_two, w),
                         CH_EPROTO);

    uint8_t wrongcount[16] = {0xFE, 0x04, 0x02, 0x02, 0x1C};
    size_t m = with_crc(wrongcount, 5);
    assert_int_equal(drv_modbus_parse_read_reply(wrongcount, m, true, 0xFE, &fc4_two, w),
                     CH_EPROTO);

    uint8_t wrongfc[16] = {0xFE, 0x03, 0x04, 0x00, 0x00, 0x02, 0x1C};
    m = with_crc(wrongfc, 7);
    assert_int_equal(drv_modbus_parse_read_reply(wrongfc, m, true, 0xFE, &fc4_two, w), CH_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtu_good),
        cmocka_unit_test(test_tcp_good_and_bits),
        cmocka_unit_test(test_exception),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
