#include "sim_slave.h"

#include "log.h"
#include "sim_frame.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

struct set_list {
    struct sim_set *items;
    size_t n;
};

struct sim_slave {
    char *name;
    uint8_t unit;
    const struct sim_model *model;
    uint64_t seed;
    uint64_t key; /* sim_value_key(name): the device's part of the noise */
    int utc_offset_min;
    modbus_mapping_t *map;
    struct set_list sets[SIM_MODEL_MAX_METRICS];
    struct sim_fault_ev *faults;
    size_t nfaults;
    struct sim_slave_stats stats;
    bool warned; /* a bad request has been logged at warning level once */
};

struct sim_slave *sim_slave_new(const char *name, uint8_t unit, const struct sim_model *model,
                                uint64_t seed, int utc_offset_min)
{
    struct sim_slave *s = ch_xcalloc(1, sizeof *s);
    s->name = ch_xstrdup(name);
    s->unit = unit;
    s->model = model;
    s->seed = seed;
    s->key = sim_value_key(name);
    s->utc_offset_min = utc_offset_min;
    s->map = sim_model_mapping_new(model);
    if (!s->map)
        abort(); /* only fails on malloc: carehub does not limp on after OOM */
    return s;
}

void sim_slave_free(struct sim_slave *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < SIM_MODEL_MAX_METRICS; i++)
        free(s->sets[i].items);
    free(s->faults);
    modbus_mapping_free(s->map);
    free(s->name);
    free(s);
}

void sim_slave_add_set(struct sim_slave *s, size_t metric, const struct sim_set *set)
{
    struct set_list *l = &s->sets[metric];
    l->items = ch_xrealloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = *set;
}

void sim_slave_add_fault(struct sim_slave *s, const struct sim_fault_ev *ev)
{
    s->faults = ch_xrealloc(s->faults, (s->nfaults + 1) * sizeof *s->faults);
    s->faults[s->nfaults++] = *ev;
}

const char *sim_slave_name(const struct sim_slave *s)
{
    return s->name;
}

uint8_t sim_slave_unit(const struct sim_slave *s)
{
    return s->unit;
}

const struct sim_model *sim_slave_model(const struct sim_slave *s)
{
    return s->model;
}

const struct sim_slave_stats *sim_slave_stats(const struct sim_slave *s)
{
    return &s->stats;
}

modbus_mapping_t *sim_slave_mapping(struct sim_slave *s)
{
    return s->map;
}

struct curve {
    const struct sim_slave *s;
    const struct sim_metric *metric;
    int64_t start_ms;
};

static double curve_at(const void *ctx, int64_t at_ms)
{
    const struct curve *c = ctx;
    return sim_value_at(c->metric, c->s->seed, c->s->key, c->start_ms + at_ms,
                        c->s->utc_offset_min);
}

/* All metric values at scenario time at_ms: each metric's scenario or
 * curve, then the model's derive hook over the lot. */
static void values_at(const struct sim_slave *s, int64_t start_ms, int64_t at_ms, double *values)
{
    bool held[SIM_MODEL_MAX_METRICS];
    for (size_t i = 0; i < s->model->nmetrics; i++) {
        struct curve c = {s, s->model->metrics[i], start_ms};
        const struct set_list *l = &s->sets[i];
        values[i] = sim_scenario_value(l->items, l->n, at_ms, curve_at, &c);
        held[i] = sim_scenario_held(l->items, l->n, at_ms);
    }
    if (s->model->derive) {
        struct sim_derive d = {.values = values,
                               .held = held,
                               .seed = s->seed,
                               .dev_key = s->key,
                               .t_ms = start_ms + at_ms,
                               .utc_offset_min = s->utc_offset_min};
        s->model->derive(s->model, &d);
    }
}

double sim_slave_value(const struct sim_slave *s, size_t metric, int64_t start_ms, int64_t at_ms)
{
    double values[SIM_MODEL_MAX_METRICS];
    values_at(s, start_ms, at_ms, values);
    return values[metric];
}

void sim_slave_values(const struct sim_slave *s, int64_t start_ms, int64_t at_ms, double *values)
{
    values_at(s, start_ms, at_ms, values);
}

enum sim_fault sim_slave_fault(const struct sim_slave *s, int64_t at_ms)
{
    const struct sim_fault_ev *f = sim_scenario_fault(s->faults, s->nfaults, at_ms);
    return f ? f->fault : SIM_FAULT_NONE;
}

bool sim_slave_coil(const struct sim_slave *s, unsigned addr)
{
    const modbus_mapping_t *map = s->map;
    unsigned start = (unsigned)map->start_bits;
    if (addr < start || addr >= start + (unsigned)map->nb_bits)
        return false;
    return map->tab_bits[addr - start] != 0;
}

/* Sets one coil as a write asks and says so when it changes. Tests and
 * installers grep for "NAME: coil A -> on (by FC05)": the message names the
 * slave itself, so that form holds whatever log.c puts in front of it. */
static void coil_set(struct sim_slave *s, unsigned addr, bool on, unsigned fc)
{
    uint8_t *bit = &s->map->tab_bits[addr - (unsigned)s->map->start_bits];
    if ((*bit != 0) == on) {
        LOGD("sim", s->name, "%s: coil %u stays %s (by FC%02u)", s->name, addr, on ? "on" : "off",
             fc);
        return;
    }
    *bit = on ? 1 : 0;
    s->stats.coil_changes++;
    LOGI("sim", s->name, "%s: coil %u -> %s (by FC%02u)", s->name, addr, on ? "on" : "off", fc);
}

/* Applies a checked FC05 or FC15 request to the coils. */
static void coil_write(struct sim_slave *s, const uint8_t *pdu)
{
    unsigned addr = (unsigned)pdu[1] << 8 | pdu[2];
    unsigned word = (unsigned)pdu[3] << 8 | pdu[4];
    s->stats.coil_writes++;
    if (pdu[0] == 0x05) {
        coil_set(s, addr, word == 0xFF00, 0x05);
        return;
    }
    /* FC15: quantity in word, then a byte count and the bits, LSB first */
    for (unsigned i = 0; i < word; i++)
        coil_set(s, addr + i, (pdu[6 + i / 8] >> (i % 8)) & 1, 0x0F);
}

/* The exception a well-behaved slave answers to pdu[0..n), or 0 if the
 * request is valid for map; why gets a line for the log. Same order as the
 * Modbus spec: function code, then quantity (illegal data value), then
 * address range. */
static uint8_t check_request(const modbus_mapping_t *map, const uint8_t *pdu, size_t n, char *why,
                             size_t whyn)
{
    unsigned fc = pdu[0];
    int want = sim_frame_pdu_len(pdu, n);
    if (want < 0) {
        snprintf(why, whyn, "function code %u is not supported", fc);
        return MODBUS_EXCEPTION_ILLEGAL_FUNCTION;
    }
    if (want == 0 || (size_t)want != n) {
        snprintf(why, whyn, "fc %u with a %zu-byte PDU does not match its function code", fc, n);
        return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    }
    unsigned addr = (unsigned)pdu[1] << 8 | pdu[2];
    unsigned qty = (unsigned)pdu[3] << 8 | pdu[4];
    unsigned start, nb, max;
    const char *table;
    switch (fc) {
    case 0x01:
    case 0x05:
    case 0x0F:
        table = "coils";
        start = (unsigned)map->start_bits;
        nb = (unsigned)map->nb_bits;
        max = fc == 0x01 ? MODBUS_MAX_READ_BITS : MODBUS_MAX_WRITE_BITS;
        break;
    case 0x02:
        table = "discrete inputs";
        start = (unsigned)map->start_input_bits;
        nb = (unsigned)map->nb_input_bits;
        max = MODBUS_MAX_READ_BITS;
        break;
    case 0x04:
        table = "input registers";
        start = (unsigned)map->start_input_registers;
        nb = (unsigned)map->nb_input_registers;
        max = MODBUS_MAX_READ_REGISTERS;
        break;
    default: /* 0x03, 0x06, 0x10 */
        table = "holding registers";
        start = (unsigned)map->start_registers;
        nb = (unsigned)map->nb_registers;
        max = fc == 0x03 ? MODBUS_MAX_READ_REGISTERS : MODBUS_MAX_WRITE_REGISTERS;
        break;
    }
    if (fc == 0x05 && qty != 0xFF00 && qty != 0x0000) {
        snprintf(why, whyn, "fc 5 coil value 0x%04x is neither 0xff00 nor 0", qty);
        return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    }
    if (fc == 0x05 || fc == 0x06)
        qty = 1; /* pdu[3..4] is the value */
    bool bad_count = (fc == 0x0F && pdu[5] != (qty + 7) / 8) || (fc == 0x10 && pdu[5] != qty * 2);
    if (qty < 1 || qty > max || bad_count) {
        snprintf(why, whyn, "fc %u quantity %u (byte count %u) is invalid (1..%u)", fc, qty,
                 n > 5 ? pdu[5] : 0, max);
        return MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE;
    }
    if (addr < start || addr + qty > start + nb) {
        if (nb)
            snprintf(why, whyn, "fc %u 0x%04x+%u is outside the %s 0x%04x..0x%04x", fc, addr, qty,
                     table, start, start + nb - 1);
        else
            snprintf(why, whyn, "fc %u 0x%04x+%u: this model has no %s", fc, addr, qty, table);
        return MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS;
    }
    return 0;
}

static void refresh(struct sim_slave *s, int64_t start_ms, int64_t at_ms)
{
    double values[SIM_MODEL_MAX_METRICS];
    values_at(s, start_ms, at_ms, values);
    sim_model_encode(s->model, values, s->unit, s->map);
}

enum sim_answer sim_slave_answer(struct sim_slave *s, const uint8_t *pdu, size_t n,
                                 int64_t start_ms, int64_t at_ms, uint8_t *exception_code)
{
    const struct sim_fault_ev *f = sim_scenario_fault(s->faults, s->nfaults, at_ms);
    switch (f ? f->fault : SIM_FAULT_NONE) {
    case SIM_FAULT_SILENT:
        s->stats.ignored++;
        return SIM_ANSWER_SILENT;
    case SIM_FAULT_EXCEPTION:
        s->stats.exceptions++;
        *exception_code = f->exception_code;
        return SIM_ANSWER_EXCEPTION;
    case SIM_FAULT_GARBAGE:
        s->stats.garbage++;
        return SIM_ANSWER_GARBAGE;
    case SIM_FAULT_NONE:
        break;
    }
    char why[160];
    uint8_t code = check_request(s->map, pdu, n, why, sizeof why);
    if (code) {
        s->stats.exceptions++;
        *exception_code = code;
        if (!s->warned)
            LOGW("sim", s->name,
                 "request refused with exception %u: %s (further refusals are logged at debug "
                 "level)",
                 code, why);
        else
            LOGD("sim", s->name, "request refused with exception %u: %s", code, why);
        s->warned = true;
        return SIM_ANSWER_EXCEPTION;
    }
    if (pdu[0] == 0x05 || pdu[0] == 0x0F)
        coil_write(s, pdu);
    refresh(s, start_ms, at_ms);
    s->stats.served++;
    return SIM_ANSWER_REPLY;
}
