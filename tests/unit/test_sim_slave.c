/* care-sim slave: which answer a request gets (faults, bad requests, normal
 * replies), what the mapping then holds, and the counters; relay coils
 * written through libmodbus's reply path, and the log line of each change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "capture.h"
#include "log.h"
#include "sim_slave.h"

#include <string.h>
#include <sys/socket.h>

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

/* ---- relay coils ------------------------------------------------------- */

/* Answers a Modbus TCP request adu[0..n) the way sim_server.c's dispatch()
 * does: sim_slave_answer() decides, then libmodbus's modbus_reply() or
 * modbus_reply_exception() answers on a socket. Returns the response PDU
 * length copied into rsp (function code onwards). */
static size_t serve_tcp(struct sim_slave *s, const uint8_t *adu, size_t n, uint8_t *rsp,
                        size_t rspn)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    modbus_t *ctx = modbus_new_tcp(NULL, 0);
    assert_non_null(ctx);
    modbus_set_socket(ctx, sv[0]);
    uint8_t code = 0;
    switch (sim_slave_answer(s, adu + 7, n - 7, START_MS, 0, &code)) {
    case SIM_ANSWER_REPLY:
        assert_true(modbus_reply(ctx, adu, (int)n, sim_slave_mapping(s)) > 0);
        break;
    case SIM_ANSWER_EXCEPTION:
        assert_true(modbus_reply_exception(ctx, adu, code) > 0);
        break;
    default:
        fail_msg("unexpected answer");
    }
    uint8_t buf[300];
    ssize_t got = recv(sv[1], buf, sizeof buf, 0);
    assert_true(got > 7);
    modbus_free(ctx);
    close(sv[0]);
    close(sv[1]);
    size_t len = (size_t)got - 7;
    assert_true(len <= rspn);
    memcpy(rsp, buf + 7, len);
    return len;
}

/* A TCP frame for unit 9 around pdu[0..n). */
static size_t tcp_frame(const uint8_t *pdu, size_t n, uint8_t *adu)
{
    static const uint8_t mbap[] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 9};
    memcpy(adu, mbap, sizeof mbap);
    adu[4] = (uint8_t)((n + 1) >> 8);
    adu[5] = (uint8_t)(n + 1);
    memcpy(adu + 7, pdu, n);
    return 7 + n;
}

static void test_relay_coils_through_libmodbus(void **state)
{
    (void)state;
    struct sim_slave *s = sim_slave_new("relay-9", 9, sim_model_find("relay-4ch"), 42, 480);
    /* each step: request, expected response PDU, coils 0..3 afterwards */
    static const struct {
        uint8_t req[8];
        size_t n;
        uint8_t rsp[6];
        size_t rn;
        uint8_t coils[4];
    } steps[] = {
        {{0x01, 0, 0, 0, 4}, 5, {0x01, 1, 0x00}, 3, {0, 0, 0, 0}},          /* all off at start */
        {{0x05, 0, 0, 0xFF, 0}, 5, {0x05, 0, 0, 0xFF, 0}, 5, {1, 0, 0, 0}}, /* sounder on */
        {{0x05, 0, 0, 0xFF, 0}, 5, {0x05, 0, 0, 0xFF, 0}, 5, {1, 0, 0, 0}}, /* again: no change */
        {{0x01, 0, 0, 0, 4}, 5, {0x01, 1, 0x01}, 3, {1, 0, 0, 0}},          /* read back */
        {{0x0F, 0, 1, 0, 3, 1, 0x05}, 7, {0x0F, 0, 1, 0, 3}, 5, {1, 1, 0, 1}}, /* 1, 3 on */
        {{0x01, 0, 1, 0, 3}, 5, {0x01, 1, 0x05}, 3, {1, 1, 0, 1}},
        {{0x05, 0, 0, 0, 0}, 5, {0x05, 0, 0, 0, 0}, 5, {0, 1, 0, 1}}, /* sounder off */
        {{0x05, 0, 4, 0xFF, 0}, 5, {0x85, 2}, 2, {0, 1, 0, 1}},       /* no coil 4 */
        {{0x0F, 0, 2, 0, 3, 1, 0x07}, 7, {0x8F, 2}, 2, {0, 1, 0, 1}}, /* 2..4: past the end */
        {{0x05, 0, 2, 0x12, 0x34}, 5, {0x85, 3}, 2, {0, 1, 0, 1}},    /* neither on nor off */
        {{0x03, 0, 0, 0, 1}, 5, {0x83, 2}, 2, {0, 1, 0, 1}},          /* no registers */
        {{0x02, 0, 0, 0, 1}, 5, {0x82, 2}, 2, {0, 1, 0, 1}},          /* no discrete inputs */
    };
    struct capture cap;
    assert_int_equal(capture_begin(&cap), 0);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        uint8_t adu[300], rsp[300];
        size_t n = tcp_frame(steps[i].req, steps[i].n, adu);
        size_t rn = serve_tcp(s, adu, n, rsp, sizeof rsp);
        if (rn != steps[i].rn || memcmp(rsp, steps[i].rsp, rn) != 0)
            fail_msg("step %zu: response of %zu bytes, fc 0x%02x 0x%02x", i, rn, rsp[0], rsp[1]);
        for (unsigned c = 0; c < 4; c++)
            if (sim_slave_coil(s, c) != steps[i].coils[c])
                fail_msg("step %zu: coil %u is %d", i, c, sim_slave_coil(s, c));
    }
    char log[4096];
    capture_end(&cap, log, sizeof log);
    /* every change, once, in order, in the form tests grep for; nothing for the repeat */
    static const char *const lines[] = {
        "I [sim:relay-9] relay-9: coil 0 -> on (by FC05)\n",
        "I [sim:relay-9] relay-9: coil 1 -> on (by FC15)\n",
        "I [sim:relay-9] relay-9: coil 3 -> on (by FC15)\n",
        "I [sim:relay-9] relay-9: coil 0 -> off (by FC05)\n",
    };
    const char *at = log;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *hit = strstr(at, lines[i]);
        if (!hit)
            fail_msg("log lacks \"%s\" after what came before:\n%s", lines[i], log);
        at = hit + strlen(lines[i]);
    }
    assert_null(strstr(log, "coil 2 ->"));
    const char *first = strstr(log, "coil 0 -> on");
    assert_null(strstr(first + 1, "coil 0 -> on")); /* the repeated write changed nothing */
    const struct sim_slave_stats *st = sim_slave_stats(s);
    assert_int_equal(st->coil_writes, 4);
    assert_int_equal(st->coil_changes, 4);
    assert_int_equal(st->served, 7);
    assert_int_equal(st->exceptions, 5);
    sim_slave_free(s);
}

/* Models without coils refuse coil writes as a real meter does, and their
 * registers are unchanged by any of it. */
static void test_coil_writes_refused_without_coils(void **state)
{
    (void)state;
    static const char *const models[] = {"jxct-th", "air-board", "xy-md02",   "co2-s8",
                                         "gas-lel", "bed-mb",    "call-panel"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        struct sim_slave *s = sim_slave_new("m", 1, sim_model_find(models[i]), 1, 480);
        static const struct {
            uint8_t pdu[8];
            size_t n;
        } writes[] = {
            {{0x05, 0, 0, 0xFF, 0}, 5},
            {{0x05, 0, 0, 0, 0}, 5},
            {{0x0F, 0, 0, 0, 1, 1, 1}, 7},
        };
        for (size_t k = 0; k < sizeof writes / sizeof writes[0]; k++) {
            uint8_t code = 0;
            if (sim_slave_answer(s, writes[k].pdu, writes[k].n, START_MS, 0, &code) !=
                    SIM_ANSWER_EXCEPTION ||
                code != MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS)
                fail_msg("%s: coil write %zu was not refused with exception 2", models[i], k);
        }
        assert_int_equal(sim_slave_stats(s)->coil_writes, 0);
        sim_slave_free(s);
    }
}

/* ---- bed and call panel --------------------------------------------------- */

static void test_call_panel_latches_until_reset(void **state)
{
    (void)state;
    struct sim_slave *s = sim_slave_new("panel-12", 5, sim_model_find("call-panel"), 42, 480);
    const struct sim_model *m = sim_slave_model(s);
    size_t sos = (size_t)sim_model_metric(m, "sos"), call = (size_t)sim_model_metric(m, "call");
    /* SOS pulled at 10 s and reset by the carer at 70 s; an ordinary call
     * pressed for 5 s at 20 s */
    const struct sim_set pull = {.at_ms = 10000, .kind = SIM_SET_VALUE, .value = 1};
    const struct sim_set reset = {.at_ms = 70000, .kind = SIM_SET_VALUE, .value = 0};
    const struct sim_set press = {
        .at_ms = 20000, .kind = SIM_SET_PULSE, .value = 1, .over_ms = 5000};
    sim_slave_add_set(s, sos, &pull);
    sim_slave_add_set(s, sos, &reset);
    sim_slave_add_set(s, call, &press);
    static const struct {
        int64_t at;
        uint8_t sos, fall, call;
    } seq[] = {
        {0, 0, 0, 0},     {9999, 0, 0, 0},  {10000, 1, 0, 0}, {20000, 1, 0, 1},
        {24999, 1, 0, 1}, {25000, 1, 0, 0}, {69999, 1, 0, 0}, {70000, 0, 0, 0},
    };
    const uint8_t read[] = {0x02, 0, 0, 0, 3};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        uint8_t code;
        assert_int_equal(sim_slave_answer(s, read, sizeof read, START_MS, seq[i].at, &code),
                         SIM_ANSWER_REPLY);
        const uint8_t *in = sim_slave_mapping(s)->tab_input_bits;
        if (in[0] != seq[i].sos || in[1] != seq[i].fall || in[2] != seq[i].call)
            fail_msg("at %lld ms: sos %u fall %u call %u", (long long)seq[i].at, in[0], in[1],
                     in[2]);
    }
    /* battery and tamper in holding registers */
    const uint8_t hold[] = {0x03, 0, 0, 0, 2};
    uint8_t code;
    assert_int_equal(sim_slave_answer(s, hold, sizeof hold, START_MS, 0, &code), SIM_ANSWER_REPLY);
    uint16_t batt = sim_slave_mapping(s)->tab_registers[0];
    assert_true(batt >= 90 && batt <= 100);
    assert_int_equal(sim_slave_mapping(s)->tab_registers[1], 0);
    /* a panel's contacts are inputs: there is nothing to write */
    const uint8_t wr[] = {0x05, 0, 0, 0, 0};
    assert_int_equal(sim_slave_answer(s, wr, sizeof wr, START_MS, 0, &code), SIM_ANSWER_EXCEPTION);
    assert_int_equal(code, MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS);
    sim_slave_free(s);
}

/* The scenario takes the resident out of bed for 25 minutes at night: the
 * bed shows no one, no heart rate, no breathing; then the routine again. */
static void test_bed_exit_scenario(void **state)
{
    (void)state;
    /* start at 04:00 local: after the night trip (back by 03:42 at the latest), before
     * getting up (06:00 at the earliest) */
    const int64_t start = START_MS + 4 * 3600000LL;
    struct sim_slave *s = sim_slave_new("bed-12", 3, sim_model_find("bed-mb"), 42, 480);
    const struct sim_model *m = sim_slave_model(s);
    size_t in_bed = (size_t)sim_model_metric(m, "in_bed");
    const struct sim_set out = {
        .at_ms = 60000, .kind = SIM_SET_PULSE, .value = 0, .over_ms = 25 * 60000};
    sim_slave_add_set(s, in_bed, &out);
    const uint8_t read[] = {0x03, 0, 0, 0, 5};
    static const struct {
        int64_t at;
        bool in;
    } seq[] = {{0, true},           {59999, true},           {60000, false},
               {25 * 60000, false}, {26 * 60000 - 1, false}, {26 * 60000, true}};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        uint8_t code;
        assert_int_equal(sim_slave_answer(s, read, sizeof read, start, seq[i].at, &code),
                         SIM_ANSWER_REPLY);
        const uint16_t *r = sim_slave_mapping(s)->tab_registers;
        if (seq[i].in) {
            if (!(r[0] == 1 && r[1] >= 55 && r[1] <= 80 && r[2] >= 10 && r[2] <= 20 && r[4] == 1))
                fail_msg("at %lld ms: in bed expected: %u %u %u %u %u", (long long)seq[i].at, r[0],
                         r[1], r[2], r[3], r[4]);
        } else if (r[0] != 0 || r[1] != 0 || r[2] != 0 || r[3] != 0 || r[4] != 0) {
            fail_msg("at %lld ms: empty bed expected: %u %u %u %u %u", (long long)seq[i].at, r[0],
                     r[1], r[2], r[3], r[4]);
        }
    }
    /* sim_slave_value() says what the registers say */
    size_t hr = (size_t)sim_model_metric(m, "hr");
    assert_float_equal(sim_slave_value(s, hr, start, 120000), 0.0, 0);
    assert_true(sim_slave_value(s, hr, start, 0) > 50.0);
    sim_slave_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_and_counters),
        cmocka_unit_test(test_faults_in_time),
        cmocka_unit_test(test_mapping_shows_scenario_values),
        cmocka_unit_test(test_relay_coils_through_libmodbus),
        cmocka_unit_test(test_coil_writes_refused_without_coils),
        cmocka_unit_test(test_call_panel_latches_until_reset),
        cmocka_unit_test(test_bed_exit_scenario),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
