#include "sim_model.h"

#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Metrics, shared by the models that measure the same thing. Levels are those
 * of a heated care room in winter; see sim_value.h for what each term does. */
static const struct sim_metric m_temperature = {
    .name = "temperature", .unit = "degC", .base = 23.0, .day = 2.5, .spread = 1.0,
    .drift = 0.4, .jitter = 0.05, .min = -40.0, .max = 80.0};
static const struct sim_metric m_humidity = {
    .name = "humidity", .unit = "%RH", .base = 52.0, .day = -8.0, .spread = 4.0,
    .drift = 2.0, .jitter = 0.2, .min = 0.0, .max = 100.0};
static const struct sim_metric m_co2 = {
    .name = "co2", .unit = "ppm", .base = 480.0, .occ = 520.0, .spread = 60.0,
    .drift = 40.0, .jitter = 5.0, .min = 400.0, .max = 10000.0};
static const struct sim_metric m_pm25 = {
    .name = "pm25", .unit = "ug/m3", .base = 12.0, .occ = 10.0, .spread = 4.0,
    .drift = 4.0, .jitter = 1.0, .min = 0.0, .max = 1000.0};
static const struct sim_metric m_pm10 = {
    .name = "pm10", .unit = "ug/m3", .base = 20.0, .occ = 15.0, .spread = 6.0,
    .drift = 6.0, .jitter = 1.5, .min = 0.0, .max = 2000.0};
static const struct sim_metric m_tvoc = {
    .name = "tvoc", .unit = "ppb", .base = 150.0, .occ = 200.0, .spread = 40.0,
    .drift = 30.0, .jitter = 5.0, .min = 0.0, .max = 60000.0};
static const struct sim_metric m_lel = {
    .name = "lel", .unit = "%LEL", .base = 0.3, .spread = 0.2, .drift = 0.3,
    .jitter = 0.05, .min = 0.0, .max = 100.0};
/* A meter's own status word: 0 unless a scenario sets it. */
static const struct sim_metric m_status = {.name = "status", .unit = "", .max = 65535.0};

/* jxct-th: JXCT-style temperature/humidity meter.
 *   FC03 0x0000 humidity    u16 /10 %RH
 *   FC03 0x0001 temperature i16 /10 degC */
static const struct sim_reg jxct_th_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_U16, 0, 10.0, 0},
    {SIM_HOLDING, 0x0001, SIM_ENC_I16, 1, 10.0, 0},
};

/* air-board: 6-in-1 air quality board.
 *   FC03 0x0000 humidity    u16 /10 %RH
 *   FC03 0x0001 temperature i16 /10 degC
 *   FC03 0x0002 PM2.5       u16 ug/m3
 *   FC03 0x0003 CO2         u16 ppm
 *   FC03 0x0004 TVOC        u16 ppb
 *   FC03 0x0005 reserved, reads 0 (lets the edge coalesce across a gap)
 *   FC03 0x0006 PM10        u16 ug/m3 */
static const struct sim_reg air_board_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_U16, 0, 10.0, 0}, {SIM_HOLDING, 0x0001, SIM_ENC_I16, 1, 10.0, 0},
    {SIM_HOLDING, 0x0002, SIM_ENC_U16, 2, 1.0, 0},  {SIM_HOLDING, 0x0003, SIM_ENC_U16, 3, 1.0, 0},
    {SIM_HOLDING, 0x0004, SIM_ENC_U16, 4, 1.0, 0},  {SIM_HOLDING, 0x0005, SIM_ENC_CONST, -1, 0, 0},
    {SIM_HOLDING, 0x0006, SIM_ENC_U16, 5, 1.0, 0},
};

/* xy-md02: XY-MD02-style meter.
 *   FC04 0x0001 temperature i16 /10 degC
 *   FC04 0x0002 humidity    u16 /10 %RH
 *   FC03 0x0101 slave address
 *   FC03 0x0102 baud code (0 = 9600, 1 = 14400, 2 = 19200): reads 0 */
static const struct sim_reg xy_md02_regs[] = {
    {SIM_INPUT, 0x0001, SIM_ENC_I16, 0, 10.0, 0},
    {SIM_INPUT, 0x0002, SIM_ENC_U16, 1, 10.0, 0},
    {SIM_HOLDING, 0x0101, SIM_ENC_UNIT, -1, 0, 0},
    {SIM_HOLDING, 0x0102, SIM_ENC_CONST, -1, 0, 0},
};

/* co2-s8: SenseAir S8-style CO2 meter, default address 0xFE ("any sensor").
 *   FC04 0x0000 meter status (0 = OK; the "status" metric)
 *   FC04 0x0001 alarm status, reads 0
 *   FC04 0x0002 output status, reads 0
 *   FC04 0x0003 CO2 u16 ppm */
static const struct sim_reg co2_s8_regs[] = {
    {SIM_INPUT, 0x0000, SIM_ENC_U16, 1, 1.0, 0},
    {SIM_INPUT, 0x0001, SIM_ENC_CONST, -1, 0, 0},
    {SIM_INPUT, 0x0002, SIM_ENC_CONST, -1, 0, 0},
    {SIM_INPUT, 0x0003, SIM_ENC_U16, 0, 1.0, 0},
};

/* gas-lel: combustible gas detector.
 *   FC03 0x0000-0x0001 gas concentration f32 %LEL, CDAB (low word first)
 *   FC03 0x0002 alarm flag u16: 1 when the gas is at or above 20 %LEL */
static const struct sim_reg gas_lel_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_F32_CDAB, 0, 0, 0},
    {SIM_HOLDING, 0x0002, SIM_ENC_FLAG_GE, 0, 20.0, 0},
};

static const struct sim_model models[] = {
    {"jxct-th", 1, {&m_humidity, &m_temperature}, 2, jxct_th_regs, CH_ARRAY_LEN(jxct_th_regs)},
    {"air-board",
     1,
     {&m_humidity, &m_temperature, &m_pm25, &m_co2, &m_tvoc, &m_pm10},
     6,
     air_board_regs,
     CH_ARRAY_LEN(air_board_regs)},
    {"xy-md02", 1, {&m_temperature, &m_humidity}, 2, xy_md02_regs, CH_ARRAY_LEN(xy_md02_regs)},
    {"co2-s8", 0xFE, {&m_co2, &m_status}, 2, co2_s8_regs, CH_ARRAY_LEN(co2_s8_regs)},
    {"gas-lel", 1, {&m_lel}, 1, gas_lel_regs, CH_ARRAY_LEN(gas_lel_regs)},
};

const struct sim_model *sim_model_find(const char *name)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(models); i++)
        if (strcmp(models[i].name, name) == 0)
            return &models[i];
    return NULL;
}

void sim_model_names(char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < CH_ARRAY_LEN(models) && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? " " : "", models[i].name);
}

int sim_model_metric(const struct sim_model *m, const char *name)
{
    for (size_t i = 0; i < m->nmetrics; i++)
        if (strcmp(m->metrics[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* Number of registers an encoding occupies. */
static unsigned reg_width(enum sim_enc e)
{
    return e == SIM_ENC_F32_CDAB ? 2 : 1;
}

modbus_mapping_t *sim_model_mapping_new(const struct sim_model *m)
{
    unsigned lo[2] = {0xFFFF, 0xFFFF}, hi[2] = {0, 0}; /* per table: [lo, hi) */
    for (size_t i = 0; i < m->nregs; i++) {
        const struct sim_reg *r = &m->regs[i];
        if (r->addr < lo[r->table])
            lo[r->table] = r->addr;
        if (r->addr + reg_width(r->enc) > hi[r->table])
            hi[r->table] = r->addr + reg_width(r->enc);
    }
    for (int t = 0; t < 2; t++)
        if (hi[t] == 0)
            lo[t] = 0;
    return modbus_mapping_new_start_address(0, 0, 0, 0, lo[SIM_HOLDING],
                                            hi[SIM_HOLDING] - lo[SIM_HOLDING], lo[SIM_INPUT],
                                            hi[SIM_INPUT] - lo[SIM_INPUT]);
}

uint16_t sim_model_enc_u16(double value, double scale)
{
    double raw = round(value * scale);
    if (raw < 0.0)
        raw = 0.0;
    if (raw > 65535.0)
        raw = 65535.0;
    return (uint16_t)raw;
}

uint16_t sim_model_enc_i16(double value, double scale)
{
    double raw = round(value * scale);
    if (raw < -32768.0)
        raw = -32768.0;
    if (raw > 32767.0)
        raw = 32767.0;
    /* two's complement: the register holds the int16 bit pattern */
    return (uint16_t)(int16_t)raw;
}

void sim_model_enc_f32_cdab(double value, uint16_t out[2])
{
    float f = (float)value;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    out[0] = (uint16_t)(bits & 0xFFFF); /* CD: low word first */
    out[1] = (uint16_t)(bits >> 16);    /* AB */
}

void sim_model_encode(const struct sim_model *m, const double *values, uint8_t unit,
                      modbus_mapping_t *map)
{
    for (size_t i = 0; i < m->nregs; i++) {
        const struct sim_reg *r = &m->regs[i];
        uint16_t *tab = r->table == SIM_HOLDING ? map->tab_registers : map->tab_input_registers;
        unsigned start = r->table == SIM_HOLDING ? map->start_registers
                                                 : map->start_input_registers;
        uint16_t *reg = &tab[r->addr - start];
        double v = r->metric >= 0 ? values[r->metric] : 0.0;
        switch (r->enc) {
        case SIM_ENC_U16:
            *reg = sim_model_enc_u16(v, r->scale);
            break;
        case SIM_ENC_I16:
            *reg = sim_model_enc_i16(v, r->scale);
            break;
        case SIM_ENC_F32_CDAB:
            sim_model_enc_f32_cdab(v, reg);
            break;
        case SIM_ENC_FLAG_GE:
            *reg = v >= r->scale ? 1 : 0;
            break;
        case SIM_ENC_UNIT:
            *reg = unit;
            break;
        case SIM_ENC_CONST:
            *reg = r->konst;
            break;
        }
    }
}
