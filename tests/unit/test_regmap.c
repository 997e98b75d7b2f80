/* Register decoding (signed, scale, word orders, f32) and request coalescing. */
#include "regmap.h"
#include "err.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static struct reg_def reg(int fc, int addr, int type, int order, double scale, double offset)
{
    struct reg_def r = {.fc = fc,
                        .address = addr,
                        .type = type,
                        .order = order,
                        .bit = -1,
                        .scale = scale,
                        .offset = offset};
    return r;
}

struct decode_case {
    const char *what;
    int type;
    int order;
    int bit;
    double scale, offset;
    uint16_t w[2];
    double want;
};

static void test_decode_table(void **state)
{
    (void)state;
    /* 123.456f = 0x42F6E979; -40.5f = 0xC2220000 */
    static const struct decode_case cases[] = {
        {"u16 humidity x10", REG_U16, ORDER_ABCD, -1, 0.1, 0, {0x0226, 0}, 55.0},
        {"i16 positive", REG_I16, ORDER_ABCD, -1, 0.1, 0, {0x00FA, 0}, 25.0},
        {"i16 below zero", REG_I16, ORDER_ABCD, -1, 0.1, 0, {0xFF9C, 0}, -10.0},
        {"i16 most negative", REG_I16, ORDER_ABCD, -1, 1, 0, {0x8000, 0}, -32768},
        {"u16 full scale", REG_U16, ORDER_ABCD, -1, 1, 0, {0xFFFF, 0}, 65535},
        {"u16 with offset", REG_U16, ORDER_ABCD, -1, 0.01, -40, {5000, 0}, 10.0},
        {"u16 bit 3 set", REG_U16, ORDER_ABCD, 3, 1, 0, {0x0008, 0}, 1.0},
        {"u16 bit 3 clear", REG_U16, ORDER_ABCD, 3, 1, 0, {0xFFF7, 0}, 0.0},
        {"u32 ABCD", REG_U32, ORDER_ABCD, -1, 1, 0, {0x0001, 0x0002}, 65538},
        {"u32 CDAB", REG_U32, ORDER_CDAB, -1, 1, 0, {0x0002, 0x0001}, 65538},
        {"u32 BADC", REG_U32, ORDER_BADC, -1, 1, 0, {0x0100, 0x0200}, 65538},
        {"u32 DCBA", REG_U32, ORDER_DCBA, -1, 1, 0, {0x0200, 0x0100}, 65538},
        {"i32 negative ABCD", REG_I32, ORDER_ABCD, -1, 1, 0, {0xFFFF, 0xFFFE}, -2},
        {"i32 negative CDAB", REG_I32, ORDER_CDAB, -1, 0.5, 0, {0xFFFE, 0xFFFF}, -1},
        {"f32 ABCD", REG_F32, ORDER_ABCD, -1, 1, 0, {0x42F6, 0xE979}, 123.456},
        {"f32 CDAB", REG_F32, ORDER_CDAB, -1, 1, 0, {0xE979, 0x42F6}, 123.456},
        {"f32 BADC", REG_F32, ORDER_BADC, -1, 1, 0, {0xF642, 0x79E9}, 123.456},
        {"f32 DCBA", REG_F32, ORDER_DCBA, -1, 1, 0, {0x79E9, 0xF642}, 123.456},
        {"f32 negative", REG_F32, ORDER_ABCD, -1, 1, 0, {0xC222, 0x0000}, -40.5},
        {"bool", REG_BOOL, ORDER_ABCD, -1, 1, 0, {1, 0}, 1.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct decode_case *c = &cases[i];
        struct reg_def r = reg(3, 0, c->type, c->order, c->scale, c->offset);
        r.bit = c->bit;
        double v = -999;
        int rc = regmap_decode(&r, c->w, &v);
        if (rc != 0 || fabs(v - c->want) > 1e-3)
            fail_msg("%s: got %g (rc %d), want %g", c->what, v, rc, c->want);
    }
}

static void test_decode_rejects_nan(void **state)
{
    (void)state;
    struct reg_def r = reg(3, 0, REG_F32, ORDER_ABCD, 1, 0);
    uint16_t nan_words[2] = {0x7FC0, 0x0000};
    uint16_t inf_words[2] = {0x7F80, 0x0000};
    double v;
    assert_int_equal(regmap_decode(&r, nan_words, &v), CH_EINVAL);
    assert_int_equal(regmap_decode(&r, inf_words, &v), CH_EINVAL);
}

/* The air board: six values at 0..4 and 6 in one request, bridging 5. */
static void test_plan_bridges_small_gap(void **state)
{
    (void)state;
    struct reg_def regs[] = {
        reg(3, 0, REG_U16, 0, 1, 0), reg(3, 1, REG_I16, 0, 1, 0), reg(3, 2, REG_U16, 0, 1, 0),
        reg(3, 3, REG_U16, 0, 1, 0), reg(3, 4, REG_U16, 0, 1, 0), reg(3, 6, REG_U16, 0, 1, 0),
    };
    struct regmap_plan p;
    assert_int_equal(regmap_plan_build(regs, 6, 4, 125, &p), 0);
    assert_int_equal(p.n_reqs, 1);
    assert_int_equal(p.reqs[0].fc, 3);
    assert_int_equal(p.reqs[0].start, 0);
    assert_int_equal(p.reqs[0].count, 7);
    assert_int_equal(p.locs[5].req, 0);
    assert_int_equal(p.locs[5].offset, 6);
    regmap_plan_free(&p);

    /* with no gap allowed the hole splits the read in two */
    assert_int_equal(regmap_plan_build(regs, 6, 0, 125, &p), 0);
    assert_int_equal(p.n_reqs, 2);
    assert_int_equal(p.reqs[1].start, 6);
    assert_int_equal(p.reqs[1].count, 1);
    regmap_plan_free(&p);
}

/* Different function codes never share a request; order in the profile does
 * not matter; a 32-bit value is never split. */
static void test_plan_groups_by_function_and_sorts(void **state)
{
    (void)state;
    struct reg_def regs[] = {
        reg(4, 3, REG_U16, 0, 1, 0),  /* co2 */
        reg(3, 10, REG_F32, 0, 1, 0), /* 10..11 */
        reg(4, 0, REG_U16, 0, 1, 0),  /* status */
        reg(3, 8, REG_U16, 0, 1, 0),  reg(1, 5, REG_BOOL, 0, 1, 0),
    };
    struct regmap_plan p;
    assert_int_equal(regmap_plan_build(regs, 5, 8, 125, &p), 0);
    assert_int_equal(p.n_reqs, 3);
    /* sorted by fc then address: fc1 5+1, fc3 8+4, fc4 0+4 */
    assert_int_equal(p.reqs[0].fc, 1);
    assert_int_equal(p.reqs[1].fc, 3);
    assert_int_equal(p.reqs[1].start, 8);
    assert_int_equal(p.reqs[1].count, 4);
    assert_int_equal(p.reqs[2].fc, 4);
    assert_int_equal(p.reqs[2].start, 0);
    assert_int_equal(p.reqs[2].count, 4);
    assert_int_equal(p.locs[0].req, 2);
    assert_int_equal(p.locs[0].offset, 3);
    assert_int_equal(p.locs[1].req, 1);
    assert_int_equal(p.locs[1].offset, 2);
    regmap_plan_free(&p);
}

/* 200 consecutive registers: at most 125 per request (the Modbus limit),
 * and a smaller per-profile cap is honoured. */
static void test_plan_respects_request_limit(void **state)
{
    (void)state;
    struct reg_def regs[200];
    for (int i = 0; i < 200; i++)
        regs[i] = reg(3, i, REG_U16, 0, 1, 0);
    struct regmap_plan p;
    assert_int_equal(regmap_plan_build(regs, 200, 8, 125, &p), 0);
    assert_int_equal(p.n_reqs, 2);
    assert_int_equal(p.reqs[0].count, 125);
    assert_int_equal(p.reqs[1].start, 125);
    assert_int_equal(p.reqs[1].count, 75);
    regmap_plan_free(&p);

    assert_int_equal(regmap_plan_build(regs, 200, 8, 16, &p), 0);
    assert_int_equal(p.n_reqs, 13);
    for (size_t i = 0; i < p.n_reqs; i++)
        assert_true(p.reqs[i].count <= 16);
    regmap_plan_free(&p);

    /* a 32-bit value straddling the cap starts a new request */
    struct reg_def two[] = {reg(3, 0, REG_U16, 0, 1, 0), reg(3, 1, REG_U32, 0, 1, 0)};
    assert_int_equal(regmap_plan_build(two, 2, 0, 2, &p), 0);
    assert_int_equal(p.n_reqs, 2);
    assert_int_equal(p.reqs[1].start, 1);
    assert_int_equal(p.reqs[1].count, 2);
    regmap_plan_free(&p);
}

static void test_plan_rejects_overflow(void **state)
{
    (void)state;
    struct reg_def r = reg(3, 65535, REG_U32, 0, 1, 0);
    struct regmap_plan p;
    assert_int_equal(regmap_plan_build(&r, 1, 0, 125, &p), CH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_table),
        cmocka_unit_test(test_decode_rejects_nan),
        cmocka_unit_test(test_plan_bridges_small_gap),
        cmocka_unit_test(test_plan_groups_by_function_and_sorts),
        cmocka_unit_test(test_plan_respects_request_limit),
        cmocka_unit_test(test_plan_rejects_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
