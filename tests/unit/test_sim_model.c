/* care-sim register maps: every model's registers at the documented
 * addresses with the documented encodings (signed temperatures, f32 CDAB,
 * contacts as discrete inputs, relay coils the model never overwrites). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sim_model.h"

#include <stdbool.h>
#include <string.h>

static void test_encodings(void **state)
{
    (void)state;
    assert_int_equal(sim_model_enc_i16(-3.4, 10), 0xFFDE); /* -34 */
    assert_int_equal(sim_model_enc_i16(-0.1, 10), 0xFFFF);
    assert_int_equal(sim_model_enc_i16(21.25, 10), 213); /* rounds half away from zero */
    assert_int_equal(sim_model_enc_i16(-5000, 10), 0x8000);
    assert_int_equal(sim_model_enc_i16(5000, 10), 0x7FFF);
    assert_int_equal(sim_model_enc_u16(45.6, 10), 456);
    assert_int_equal(sim_model_enc_u16(-1, 10), 0);
    assert_int_equal(sim_model_enc_u16(7000, 10), 65535);
    uint16_t w[2];
    sim_model_enc_f32_cdab(23.75, w); /* 0x41BE0000 */
    assert_int_equal(w[0], 0x0000);
    assert_int_equal(w[1], 0x41BE);
    sim_model_enc_f32_cdab(0.1, w); /* 0x3DCCCCCD: low word CD first, then AB */
    assert_int_equal(w[0], 0xCCCD);
    assert_int_equal(w[1], 0x3DCC);
    sim_model_enc_f32_cdab(-2.5, w); /* 0xC0200000 */
    assert_int_equal(w[0], 0x0000);
    assert_int_equal(w[1], 0xC020);
}

struct metric_value {
    const char *metric;
    double value;
};

struct expect {
    enum sim_table table;
    uint16_t addr;
    uint16_t raw;
};

static const struct {
    const char *model;
    uint8_t unit;
    struct metric_value values[6];
    struct expect regs[8];
    size_t nregs;
} cases[] = {
    {"jxct-th",
     1,
     {{"humidity", 45.6}, {"temperature", -3.4}},
     {{SIM_HOLDING, 0, 456}, {SIM_HOLDING, 1, 0xFFDE}},
     2},
    {"air-board",
     1,
     {{"humidity", 55.5},
      {"temperature", 21.3},
      {"pm25", 35},
      {"co2", 1234},
      {"tvoc", 456},
      {"pm10", 78}},
     {{SIM_HOLDING, 0, 555},
      {SIM_HOLDING, 1, 213},
      {SIM_HOLDING, 2, 35},
      {SIM_HOLDING, 3, 1234},
      {SIM_HOLDING, 4, 456},
      {SIM_HOLDING, 5, 0},
      {SIM_HOLDING, 6, 78}},
     7},
    {"xy-md02",
     7,
     {{"temperature", -0.5}, {"humidity", 60.2}},
     {{SIM_INPUT, 1, 0xFFFB},
      {SIM_INPUT, 2, 602},
      {SIM_HOLDING, 0x101, 7},
      {SIM_HOLDING, 0x102, 0}},
     4},
    {"co2-s8",
     0xFE,
     {{"co2", 800}, {"status", 0}},
     {{SIM_INPUT, 0, 0}, {SIM_INPUT, 1, 0}, {SIM_INPUT, 2, 0}, {SIM_INPUT, 3, 800}},
     4},
    {"gas-lel",
     1,
     {{"lel", 0.1}},
     {{SIM_HOLDING, 0, 0xCCCD}, {SIM_HOLDING, 1, 0x3DCC}, {SIM_HOLDING, 2, 0}},
     3},
    {"gas-lel",
     1,
     {{"lel", 20.0}},
     {{SIM_HOLDING, 0, 0x0000}, {SIM_HOLDING, 1, 0x41A0}, {SIM_HOLDING, 2, 1}},
     3},
    {"gas-lel", 1, {{"lel", 19.99}}, {{SIM_HOLDING, 2, 0}}, 1},
    {"bed-mb",
     1,
     {{"in_bed", 1}, {"hr", 64.6}, {"rr", 14.4}, {"movement", 7.2}, {"presence", 1}},
     {{SIM_HOLDING, 0, 1},
      {SIM_HOLDING, 1, 65},
      {SIM_HOLDING, 2, 14},
      {SIM_HOLDING, 3, 7},
      {SIM_HOLDING, 4, 1}},
     5},
    {"bed-mb",
     1,
     {{"in_bed", 0}, {"hr", 0}, {"rr", 0}, {"movement", 0}, {"presence", 0}},
     {{SIM_HOLDING, 0, 0},
      {SIM_HOLDING, 1, 0},
      {SIM_HOLDING, 2, 0},
      {SIM_HOLDING, 3, 0},
      {SIM_HOLDING, 4, 0}},
     5},
    {"call-panel",
     1,
     {{"sos", 1}, {"fall", 0}, {"call", 1}, {"battery", 95.6}, {"tamper", 0}},
     {{SIM_DISCRETE, 0, 1},
      {SIM_DISCRETE, 1, 0},
      {SIM_DISCRETE, 2, 1},
      {SIM_HOLDING, 0, 96},
      {SIM_HOLDING, 1, 0}},
     5},
    {"call-panel",
     1,
     {{"sos", 0}, {"fall", 1}, {"call", 0.4}, {"battery", 12}, {"tamper", 1}},
     {{SIM_DISCRETE, 0, 0},
      {SIM_DISCRETE, 1, 1},
      {SIM_DISCRETE, 2, 0},
      {SIM_HOLDING, 0, 12},
      {SIM_HOLDING, 1, 1}},
     5},
};

static uint16_t reg(const modbus_mapping_t *map, enum sim_table t, uint16_t addr)
{
    if (t == SIM_COIL || t == SIM_DISCRETE) {
        unsigned start = (unsigned)(t == SIM_COIL ? map->start_bits : map->start_input_bits);
        unsigned nb = (unsigned)(t == SIM_COIL ? map->nb_bits : map->nb_input_bits);
        assert_true(addr >= start && addr < start + nb);
        return (t == SIM_COIL ? map->tab_bits : map->tab_input_bits)[addr - start];
    }
    unsigned start =
        (unsigned)(t == SIM_HOLDING ? map->start_registers : map->start_input_registers);
    unsigned nb = (unsigned)(t == SIM_HOLDING ? map->nb_registers : map->nb_input_registers);
    assert_true(addr >= start && addr < start + nb);
    return (t == SIM_HOLDING ? map->tab_registers : map->tab_input_registers)[addr - start];
}

static void test_register_maps(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct sim_model *m = sim_model_find(cases[c].model);
        assert_non_null(m);
        double values[SIM_MODEL_MAX_METRICS] = {0};
        for (size_t i = 0; i < 6 && cases[c].values[i].metric; i++) {
            int k = sim_model_metric(m, cases[c].values[i].metric);
            assert_true(k >= 0);
            values[k] = cases[c].values[i].value;
        }
        modbus_mapping_t *map = sim_model_mapping_new(m);
        assert_non_null(map);
        sim_model_encode(m, values, cases[c].unit, map);
        for (size_t r = 0; r < cases[c].nregs; r++) {
            const struct expect *e = &cases[c].regs[r];
            if (reg(map, e->table, e->addr) != e->raw)
                fail_msg("%s: table %d 0x%04x is %u, expected %u", cases[c].model, e->table,
                         e->addr, reg(map, e->table, e->addr), e->raw);
        }
        modbus_mapping_free(map);
    }
}

static void test_mapping_extent(void **state)
{
    (void)state;
    static const struct {
        const char *model;
        unsigned hs, hn, is, in, cn, dn; /* coils and discrete inputs start at 0 */
        uint8_t unit;
    } ext[] = {
        {"jxct-th", 0, 2, 0, 0, 0, 0, 1},     {"air-board", 0, 7, 0, 0, 0, 0, 1},
        {"xy-md02", 0x101, 2, 1, 2, 0, 0, 1}, {"co2-s8", 0, 0, 0, 4, 0, 0, 0xFE},
        {"gas-lel", 0, 3, 0, 0, 0, 0, 1},     {"bed-mb", 0, 5, 0, 0, 0, 0, 1},
        {"call-panel", 0, 2, 0, 0, 0, 3, 1},  {"relay-4ch", 0, 0, 0, 0, 4, 0, 1},
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        const struct sim_model *m = sim_model_find(ext[i].model);
        assert_non_null(m);
        modbus_mapping_t *map = sim_model_mapping_new(m);
        assert_int_equal(m->default_unit, ext[i].unit);
        assert_int_equal(map->nb_bits, ext[i].cn);
        assert_int_equal(map->nb_input_bits, ext[i].dn);
        assert_int_equal(map->nb_registers, ext[i].hn);
        assert_int_equal(map->nb_input_registers, ext[i].in);
        assert_int_equal(map->start_bits, 0);
        assert_int_equal(map->start_input_bits, 0);
        if (ext[i].hn)
            assert_int_equal(map->start_registers, ext[i].hs);
        if (ext[i].in)
            assert_int_equal(map->start_input_registers, ext[i].is);
        assert_int_equal(sim_model_has_table(m, SIM_COIL), ext[i].cn > 0);
        assert_int_equal(sim_model_has_table(m, SIM_DISCRETE), ext[i].dn > 0);
        modbus_mapping_free(map);
    }
}

/* Coils hold what the master wrote: encoding the model's values (there are
 * none for a relay) must not switch them back off. */
static void test_encode_leaves_coils(void **state)
{
    (void)state;
    const struct sim_model *m = sim_model_find("relay-4ch");
    assert_int_equal(m->nmetrics, 0);
    modbus_mapping_t *map = sim_model_mapping_new(m);
    map->tab_bits[1] = 1;
    map->tab_bits[3] = 1;
    sim_model_encode(m, NULL, 1, map);
    static const uint8_t want[] = {0, 1, 0, 1};
    for (int i = 0; i < 4; i++)
        assert_int_equal(map->tab_bits[i], want[i]);
    modbus_mapping_free(map);
}

/* The bed's derive hook: a scenario that takes the resident out of bed
 * empties the bed's other metrics, unless the scenario decides them too. */
static void test_bed_derive(void **state)
{
    (void)state;
    const struct sim_model *m = sim_model_find("bed-mb");
    assert_non_null(m->derive);
    int in_bed = sim_model_metric(m, "in_bed"), hr = sim_model_metric(m, "hr"),
        rr = sim_model_metric(m, "rr"), mv = sim_model_metric(m, "movement"),
        pr = sim_model_metric(m, "presence");
    assert_true(in_bed >= 0 && hr >= 0 && rr >= 0 && mv >= 0 && pr >= 0);
    /* 03:00 local on 2025-11-23 at UTC+8 */
    int64_t t = 1763827200000LL + 3 * 3600000LL;

    double v[SIM_MODEL_MAX_METRICS] = {0};
    bool held[SIM_MODEL_MAX_METRICS] = {false};
    v[in_bed] = 0;
    held[in_bed] = true;
    v[hr] = 66, v[rr] = 15, v[mv] = 5, v[pr] = 1;
    held[rr] = true; /* the scenario holds rr: it stays */
    struct sim_derive d = {
        .values = v, .held = held, .seed = 1, .dev_key = 2, .t_ms = t, .utc_offset_min = 480};
    m->derive(m, &d);
    assert_float_equal(v[hr], 0.0, 0);
    assert_float_equal(v[rr], 15.0, 0);
    assert_float_equal(v[mv], 0.0, 0);
    assert_float_equal(v[pr], 0.0, 0);

    /* and into bed at 10:00, when the routine has the resident up */
    v[in_bed] = 1;
    v[hr] = 0, v[rr] = 0, v[mv] = 0, v[pr] = 0;
    held[rr] = false;
    d.t_ms = 1763827200000LL + 10 * 3600000LL;
    m->derive(m, &d);
    assert_true(v[hr] >= 55.0 && v[hr] <= 80.0);
    assert_true(v[rr] >= 10.0 && v[rr] <= 20.0);
    assert_true(v[mv] >= 0.0 && v[mv] <= 30.0);
    assert_float_equal(v[pr], 1.0, 0);

    /* the routine decides in_bed: nothing to change */
    held[in_bed] = false;
    v[hr] = 77;
    m->derive(m, &d);
    assert_float_equal(v[hr], 77.0, 0);
}

static void test_lookup(void **state)
{
    (void)state;
    assert_null(sim_model_find("co2-s9"));
    const struct sim_model *m = sim_model_find("air-board");
    assert_int_equal(sim_model_metric(m, "lel"), -1);
    char names[128];
    sim_model_names(names, sizeof names);
    assert_string_equal(names,
                        "jxct-th air-board xy-md02 co2-s8 gas-lel bed-mb call-panel relay-4ch");
    assert_int_equal(sim_model_metric(sim_model_find("call-panel"), "sos"), 0);
    assert_int_equal(sim_model_metric(sim_model_find("bed-mb"), "in_bed"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encodings),      cmocka_unit_test(test_register_maps),
        cmocka_unit_test(test_mapping_extent), cmocka_unit_test(test_encode_leaves_coils),
        cmocka_unit_test(test_bed_derive),     cmocka_unit_test(test_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
