/* care-sim slave: which answer a request gets (faults, bad requests, normal
 * replies), what the mapping then holds, and the counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sim_slave.h"

#define START_MS 1763827200000LL

static void test_answers_and_counters(void **state)
{
    (void)state;
    struct sim_slave *s = sim_slave_new("room101-th", 1, sim_model_find("jxct-th"), 42, 480);
    static const struct {
        uint8_t pdu[8];
        size_t n;
        enum sim_answer answer;
        uint8_t code;
    } cases[] = {
        {{0x03, 0, 0, 0, 2}, 5, SIM_ANSWER_REPLY, 0},
        {{0x03, 0, 1, 0, 1}, 5, SIM_ANSWER_REPLY, 0},
        {{0x03, 0, 1, 0, 2}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS},
        {{0x03, 0, 0, 0, 0}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE},
        {{0x03, 0, 0, 0, 126}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE},
        {{0x04, 0, 0, 0, 1}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS},
        {{0x01, 0, 0, 0, 1}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS},
        {{0x03, 0, 0}, 3, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE},
        {{0x2B, 0x0E, 1, 0}, 4, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_FUNCTION},
        {{0x06, 0, 1, 0x12, 0x34}, 5, SIM_ANSWER_REPLY, 0},
        {{0x05, 0, 0, 0x12, 0x34}, 5, SIM_ANSWER_EXCEPTION, MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE},
        {{0x10, 0, 0, 0, 1, 2, 0, 9}, 8, SIM_ANSWER_REPLY, 0},
        {{0x10, 0, 0, 0, 2, 2, 0, 9},
         8,
         SIM_ANSWER_EXCEPTION,
         MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE}, /* byte count says 1 register */
    };
    int replies = 0, exceptions = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t code = 0;
        enum sim_answer a = sim_slave_answer(s, cases[i].pdu, cases[i].n, START_MS, 0, &code);
        if (a != cases[i].answer)
            fail_msg("case %zu: answer %d, expected %d", i, a, cases[i].answer);
        if (a == SIM_ANSWER_EXCEPTION) {
            assert_int_equal(code, cases[i].code);
            exceptions++;
        } else {
            replies++;
        }
    }
    assert_int_equal(sim_slave_stats(s)->served, replies);
    assert_int_equal(sim_slave_stats(s)->exceptions, exceptions);
    sim_slave_free(s);
}

static void test_faults_in_time(void **state)
{
    (void)state;
    struct sim_slave *s = sim_slave_new("meter", 2, sim_model_find("xy-md02"), 1, 480);
    const struct sim_fault_ev evs[] = {
        {.at_ms = 10000, .fault = SIM_FAULT_SILENT},
        {.at_ms = 20000, .fault = SIM_FAULT_EXCEPTION, .exception_code = 6},
        {.at_ms = 30000, .fault = SIM_FAULT_GARBAGE},
        {.at_ms = 40000, .fault = SIM_FAULT_NONE},
    };
    for (size_t i = 0; i < 4; i++)
        sim_slave_add_fault(s, &evs[i]);
    const uint8_t read[] = {0x04, 0, 1, 0, 2};
    const uint8_t bad[] = {0x04, 0, 0, 0, 2}; /* faults answer before the map is checked */
    static const struct {
        int64_t at;
        enum sim_answer a;
    } seq[] = {
        {0, SIM_ANSWER_REPLY},      {9999, SIM_ANSWER_REPLY},      {10000, SIM_ANSWER_SILENT},
        {19999, SIM_ANSWER_SILENT}, {20000, SIM_ANSWER_EXCEPTION}, {30000, SIM_ANSWER_GARBAGE},
        {40000, SIM_ANSWER_REPLY},  {99999, SIM_ANSWER_REPLY},
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        uint8_t code = 0;
        assert_int_equal(sim_slave_answer(s, read, sizeof read, START_MS, seq[i].at, &code),
                         seq[i].a);
        if (seq[i].a == SIM_ANSWER_EXCEPTION)
            assert_int_equal(code, 6);
        if (seq[i].at >= 10000 && seq[i].at < 40000)
            assert_int_equal(sim_slave_answer(s, bad, sizeof bad, START_MS, seq[i].at, &code),
                             seq[i].a);
    }
    const struct sim_slave_stats *st = sim_slave_stats(s);
    assert_int_equal(st->served, 4);
    assert_int_equal(st->ignored, 4);
    assert_int_equal(st->exceptions, 2);
    assert_int_equal(st->garbage, 2);
    sim_slave_free(s);
}

static void test_mapping_shows_scenario_values(void **state)
{
    (void)state;
    struct sim_slave *s = sim_slave_new("th2", 4, sim_model_find("jxct-th"), 42, 480);
    const struct sim_model *m = sim_slave_model(s);
    size_t temp = (size_t)sim_model_metric(m, "temperature");
    struct sim_set hold = {.at_ms = 0, .kind = SIM_SET_VALUE, .value = -12.5};
    sim_slave_add_set(s, temp, &hold);
    uint8_t code;
    const uint8_t read[] = {0x03, 0, 0, 0, 2};
    assert_int_equal(sim_slave_answer(s, read, sizeof read, START_MS, 5000, &code),
                     SIM_ANSWER_REPLY);
    modbus_mapping_t *map = sim_slave_mapping(s);
    assert_int_equal(map->tab_registers[1], (uint16_t)-125);
    /* humidity is still the simulated curve, the same as the value function says */
    size_t hum = (size_t)sim_model_metric(m, "humidity");
    double h = sim_slave_value(s, hum, START_MS, 5000);
    assert_int_equal(map->tab_registers[0], sim_model_enc_u16(h, 10));
    assert_true(h > 20.0 && h < 90.0);
    sim_slave_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_and_counters),
        cmocka_unit_test(test_faults_in_time),
        cmocka_unit_test(test_mapping_shows_scenario_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
