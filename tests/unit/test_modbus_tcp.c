/* The driver's checks of Modbus TCP replies (issue 11): every MBAP field and
 * the PDU against the request, both sides of each limit, and the log text
 * naming the field, what arrived and what was expected. */
#include "drv_modbus.h"
#include "err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* fc3, 2 registers from 0, transaction 0x1234, unit 2 */
static const uint8_t READ2[5] = {3, 0, 0, 0, 2};
/* fc5, coil 7 on */
static const uint8_t COIL7[5] = {5, 0, 7, 0xFF, 0};

struct tcase {
    const char *name;
    uint8_t adu[24];
    size_t n;
    const uint8_t *req;
    int rc;
    enum mb_fault fault;
    const char *text; /* drv_modbus_fault_format() */
};

#define GOOD_HDR 0x12, 0x34, 0, 0, 0, 7, 2

static const struct tcase cases[] = {
    {"good", {GOOD_HDR, 3, 4, 0x01, 0xC2, 0x00, 0xD7}, 13, READ2, 0, MB_FAULT_NONE, NULL},
    {"tid+1",
     {0x12, 0x35, 0, 0, 0, 7, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_TID,
     "MBAP transaction id 4661, expected 4660"},
    {"tid high byte",
     {0x13, 0x34, 0, 0, 0, 7, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_TID,
     "MBAP transaction id 4916, expected 4660"},
    /* libmodbus 3.1.6 passes 0x0007 and 0x0700 (its test needs both bytes set) */
    {"protocol 7",
     {0x12, 0x34, 0, 7, 0, 7, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_PROTOCOL,
     "MBAP protocol id 7, expected 0"},
    {"protocol 0x0700",
     {0x12, 0x34, 7, 0, 0, 7, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_PROTOCOL,
     "MBAP protocol id 1792, expected 0"},
    {"length 0",
     {0x12, 0x34, 0, 0, 0, 0, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 0, expected 3..254"},
    {"length 2",
     {0x12, 0x34, 0, 0, 0, 2, 2, 3},
     8,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 2, expected 3..254"},
    {"length 0xFFFF",
     {0x12, 0x34, 0, 0, 0xFF, 0xFF, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 65535, expected 3..254"},
    {"length 255",
     {0x12, 0x34, 0, 0, 0, 255, 2, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 255, expected 3..254"},
    {"unit of another meter",
     {0x12, 0x34, 0, 0, 0, 7, 1, 3, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_UNIT,
     "unit id 1, expected 2"},
    {"length 9, PDU of 6 and 2 bytes padding",
     {0x12, 0x34, 0, 0, 0, 9, 2, 3, 4, 0, 0, 0, 0, 0, 0},
     15,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 9, expected 7"},
    {"length 5 cuts the PDU",
     {0x12, 0x34, 0, 0, 0, 5, 2, 3, 4, 0, 0},
     11,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 5, expected 7"},
    {"frame shorter than its length",
     {GOOD_HDR, 3, 4, 0, 0},
     11,
     READ2,
     CH_EPROTO,
     MB_FAULT_SHORT,
     "frame size 11, expected 13"},
    {"a byte beyond the frame",
     {GOOD_HDR, 3, 4, 0, 0, 0, 0, 0},
     14,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 7, expected 8"},
    {"shorter than a header",
     {0x12, 0x34, 0, 0, 0, 7},
     6,
     READ2,
     CH_EPROTO,
     MB_FAULT_SHORT,
     "frame size 6, expected 7"},
    {"another function",
     {GOOD_HDR, 4, 4, 0, 0, 0, 0},
     13,
     READ2,
     CH_EPROTO,
     MB_FAULT_FUNCTION,
     "function code 0x04, expected 0x03"},
    {"byte count of 3 registers",
     {0x12, 0x34, 0, 0, 0, 9, 2, 3, 6, 0, 0, 0, 0, 0, 0},
     15,
     READ2,
     CH_EPROTO,
     MB_FAULT_COUNT,
     "byte count 6, expected 4"},
    {"exception",
     {0x12, 0x34, 0, 0, 0, 3, 2, 0x83, 2},
     9,
     READ2,
     CH_EEXCEPTION,
     MB_FAULT_EXCEPTION,
     "exception code 2"},
    {"exception to another function",
     {0x12, 0x34, 0, 0, 0, 3, 2, 0x84, 2},
     9,
     READ2,
     CH_EPROTO,
     MB_FAULT_FUNCTION,
     "function code 0x84, expected 0x83"},
    {"exception with a byte too many",
     {0x12, 0x34, 0, 0, 0, 4, 2, 0x83, 2, 0},
     10,
     READ2,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 4, expected 3"},
    {"coil echo", {0x12, 0x34, 0, 0, 0, 6, 2, 5, 0, 7, 0xFF, 0}, 12, COIL7, 0, MB_FAULT_NONE, NULL},
    {"coil echo with the other level",
     {0x12, 0x34, 0, 0, 0, 6, 2, 5, 0, 7, 0, 0},
     12,
     COIL7,
     CH_EPROTO,
     MB_FAULT_ECHO,
     "write echo address 7 value 0x0000, expected address 7 value 0xFF00"},
    {"coil echo of another coil",
     {0x12, 0x34, 0, 0, 0, 6, 2, 5, 0, 8, 0xFF, 0},
     12,
     COIL7,
     CH_EPROTO,
     MB_FAULT_ECHO,
     "write echo address 8 value 0xFF00, expected address 7 value 0xFF00"},
    {"coil echo one byte long",
     {0x12, 0x34, 0, 0, 0, 7, 2, 5, 0, 7, 0xFF, 0, 0},
     13,
     COIL7,
     CH_EPROTO,
     MB_FAULT_LENGTH,
     "MBAP length 7, expected 6"},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *c = &cases[i];
        struct mb_fault_info why = {MB_FAULT_UNIT, 9, 9, 9};
        int rc = drv_modbus_check_tcp_adu(c->adu, c->n, 0x1234, 2, c->req, 5, &why);
        if (rc != c->rc || (c->fault != MB_FAULT_NONE && why.fault != c->fault))
            fail_msg("%s: rc %d fault %s, want rc %d fault %s", c->name, rc,
                     drv_modbus_fault_name(why.fault), c->rc, drv_modbus_fault_name(c->fault));
        if (c->text) {
            char buf[128];
            assert_string_equal(drv_modbus_fault_format(&why, buf, sizeof buf), c->text);
        }
        /* without the reason: the same verdict */
        assert_int_equal(drv_modbus_check_tcp_adu(c->adu, c->n, 0x1234, 2, c->req, 5, NULL), c->rc);
    }
}

/* The header alone, as the driver checks it before reading the rest. */
static void test_mbap_limits(void **state)
{
    (void)state;
    uint8_t h[7] = {0xFF, 0xFF, 0, 0, 0, 3, 0xFE};
    struct mb_fault_info why;
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFE, &why), 0);
    h[5] = 254;
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFE, &why), 0);
    h[4] = 0; /* 254 ok, 255 and 256 not */
    h[5] = 255;
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFE, &why), CH_EPROTO);
    assert_int_equal(why.fault, MB_FAULT_LENGTH);
    h[4] = 1;
    h[5] = 0;
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFE, &why), CH_EPROTO);
    assert_int_equal(why.got, 256);
    h[4] = 0;
    h[5] = 3;
    assert_int_equal(drv_modbus_check_mbap(h, 0, 0xFE, &why), CH_EPROTO);
    assert_int_equal(why.fault, MB_FAULT_TID);
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFF, &why), CH_EPROTO);
    assert_int_equal(why.fault, MB_FAULT_UNIT);
    assert_int_equal(why.got, 0xFE);
    /* the first wrong field is the one named: transaction id before unit */
    h[0] = 0;
    h[6] = 0;
    assert_int_equal(drv_modbus_check_mbap(h, 0xFFFF, 0xFE, &why), CH_EPROTO);
    assert_int_equal(why.fault, MB_FAULT_TID);
}

/* A good reply cut at every length, and the bits of a coil read. */
static void test_truncated_and_bits(void **state)
{
    (void)state;
    const uint8_t good[] = {GOOD_HDR, 3, 4, 0x01, 0xC2, 0x00, 0xD7};
    for (size_t n = 0; n < sizeof good; n++)
        assert_int_equal(drv_modbus_check_tcp_adu(good, n, 0x1234, 2, READ2, 5, NULL), CH_EPROTO);
    const uint8_t bits_req[5] = {1, 0, 0, 0, 10}; /* 10 coils: 2 bytes */
    const uint8_t bits[] = {0x12, 0x34, 0, 0, 0, 5, 2, 1, 2, 0x05, 0x02};
    assert_int_equal(drv_modbus_check_tcp_adu(bits, sizeof bits, 0x1234, 2, bits_req, 5, NULL), 0);
    const uint8_t nine_req[5] = {1, 0, 0, 0, 9}; /* 9 coils: 2 bytes too */
    assert_int_equal(drv_modbus_check_tcp_adu(bits, sizeof bits, 0x1234, 2, nine_req, 5, NULL), 0);
    const uint8_t eight_req[5] = {1, 0, 0, 0, 8}; /* 8 coils: 1 byte */
    assert_int_equal(drv_modbus_check_tcp_adu(bits, sizeof bits, 0x1234, 2, eight_req, 5, NULL),
                     CH_EPROTO);
    /* requests the driver never sends */
    const uint8_t fc16[5] = {16, 0, 0, 0, 1};
    assert_int_equal(drv_modbus_check_tcp_adu(good, sizeof good, 0x1234, 2, fc16, 5, NULL),
                     CH_EINVAL);
    assert_int_equal(drv_modbus_check_tcp_adu(good, sizeof good, 0x1234, 2, READ2, 4, NULL),
                     CH_EINVAL);
}

/* drv_modbus_parse_read_reply() on TCP: the same header checks (but not the
 * transaction id, which it does not know), and the decoded words. */
static void test_parse_read_reply_tcp(void **state)
{
    (void)state;
    const struct regmap_req rq = {.fc = 3, .start = 0, .count = 2};
    uint16_t w[2] = {0, 0};
    uint8_t f[] = {0xAB, 0xCD, 0, 0, 0, 7, 2, 3, 4, 0x01, 0xC2, 0x00, 0xD7};
    assert_int_equal(drv_modbus_parse_read_reply(f, sizeof f, false, 2, &rq, w), 0);
    assert_int_equal(w[0], 450);
    assert_int_equal(w[1], 215);
    f[3] = 7;
    assert_int_equal(drv_modbus_parse_read_reply(f, sizeof f, false, 2, &rq, w), CH_EPROTO);
    f[3] = 0;
    f[5] = 9;
    assert_int_equal(drv_modbus_parse_read_reply(f, sizeof f, false, 2, &rq, w), CH_EPROTO);
    f[5] = 7;
    assert_int_equal(drv_modbus_parse_read_reply(f, sizeof f, false, 1, &rq, w), CH_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_mbap_limits),
        cmocka_unit_test(test_truncated_and_bits),
        cmocka_unit_test(test_parse_read_reply_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
