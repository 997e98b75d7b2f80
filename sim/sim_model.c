#include "sim_model.h"

#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Metrics, shared by the models that measure the same thing. Levels are those
 * of a heated care room in winter; sim_value.h says what each term does. */
// clang-format off
static const struct sim_metric
    /*               name           unit    base   day   occ  spread drift jitter  min     max    shape */
    m_temperature = {"temperature", "degC",  23.0,  2.5,   0.0,  1.0,  0.4, 0.05, -40.0,    80.0, SIM_SHAPE_CURVE},
    m_humidity    = {"humidity",    "%RH",   52.0, -8.0,   0.0,  4.0,  2.0, 0.2,    0.0,   100.0, SIM_SHAPE_CURVE},
    m_co2         = {"co2",         "ppm",  480.0,  0.0, 520.0, 60.0, 40.0, 5.0,  400.0, 10000.0, SIM_SHAPE_CURVE},
    m_pm25        = {"pm25",        "ug/m3", 12.0,  0.0,  10.0,  4.0,  4.0, 1.0,    0.0,  1000.0, SIM_SHAPE_CURVE},
    m_pm10        = {"pm10",        "ug/m3", 20.0,  0.0,  15.0,  6.0,  6.0, 1.5,    0.0,  2000.0, SIM_SHAPE_CURVE},
    m_tvoc        = {"tvoc",        "ppb",  150.0,  0.0, 200.0, 40.0, 30.0, 5.0,    0.0, 60000.0, SIM_SHAPE_CURVE},
    m_lel         = {"lel",         "%LEL",   0.3,  0.0,   0.0,  0.2,  0.3, 0.05,   0.0,   100.0, SIM_SHAPE_CURVE},
    /* a meter's own status word: 0 unless a scenario sets it */
    m_status      = {"status",      "",       0.0,  0.0,   0.0,  0.0,  0.0, 0.0,    0.0, 65535.0, SIM_SHAPE_CURVE};

/* Bed sensor: one resident's routine (sim_value.h) decides in_bed; heart and
 * breathing rates of an elderly person asleep, lowest before dawn; movement
 * low in sleep with bursts getting in and out. */
static const struct sim_metric
    /*            name        unit    base  day  occ  spread drift jitter min    max    shape */
    m_in_bed   = {"in_bed",   "",      0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_IN_BED},
    m_hr       = {"hr",       "bpm",  67.0, 2.0, 0.0, 3.0,   2.0,  1.0,   0.0, 250.0, SIM_SHAPE_VITAL},
    m_rr       = {"rr",       "/min", 15.0, 0.5, 0.0, 1.5,   1.0,  0.5,   0.0,  60.0, SIM_SHAPE_VITAL},
    m_movement = {"movement", "",      6.0, 0.0, 0.0, 2.0,   5.0,  3.0,   0.0, 100.0, SIM_SHAPE_ACTIVITY},
    m_presence = {"presence", "",      0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_PRESENCE};

/* 60 GHz sleep radar: the bed's metrics plus what the radar infers from
 * them; derive_radar() computes these three unless a scenario holds them. */
static const struct sim_metric
    /*                name            unit base day  occ  spread drift jitter min  max  shape */
    m_motion       = {"motion",       "",  0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0, 2.0, SIM_SHAPE_CURVE},
    m_sleep_stage  = {"sleep_stage",  "",  0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0, 3.0, SIM_SHAPE_CURVE},
    m_breath_state = {"breath_state", "",  0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0, 3.0, SIM_SHAPE_CURVE};

/* Nurse-call panel: contacts are 0 until a scenario presses them; the
 * battery of its wireless pull cords sits a little below full. */
static const struct sim_metric
    /*           name       unit  base  day  occ  spread drift jitter min   max    shape */
    m_sos     = {"sos",     "",    0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_CURVE},
    m_fall    = {"fall",    "",    0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_CURVE},
    m_call    = {"call",    "",    0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_CURVE},
    m_tamper  = {"tamper",  "",    0.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_CURVE},
    m_battery = {"battery", "%",  96.0, 0.0, 0.0, 2.0,   0.4,  0.0,   0.0, 100.0, SIM_SHAPE_CURVE};

/* Care bracelet: heart rate measured at the wrist, a little higher and
 * noisier than a bed's (the wearer is up and about); battery drains slowly
 * and only scenarios empty it; worn unless a scenario takes it off. The
 * battery's base is the wearable's configured level (sim_home.c). */
static const struct sim_metric
    /*             name       unit   base  day  occ  spread drift jitter min    max    shape */
    m_band_hr   = {"hr",      "bpm", 72.0, 4.0, 0.0, 0.0,   3.0,  1.5,   0.0, 250.0, SIM_SHAPE_CURVE},
    m_band_worn = {"worn",    "",     1.0, 0.0, 0.0, 0.0,   0.0,  0.0,   0.0,   1.0, SIM_SHAPE_CURVE};

/* Register maps. deploy/sim/README.md and care-devices.md document the same
 * tables. */

/* jxct-th: JXCT-style temperature/humidity meter */
static const struct sim_reg jxct_th_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_U16, &m_humidity,    10.0},
    {SIM_HOLDING, 0x0001, SIM_ENC_I16, &m_temperature, 10.0},
};

/* air-board: 6-in-1 air quality board; 0x0005 is reserved and reads 0, a
 * gap the edge can coalesce across */
static const struct sim_reg air_board_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_U16,   &m_humidity,    10.0},
    {SIM_HOLDING, 0x0001, SIM_ENC_I16,   &m_temperature, 10.0},
    {SIM_HOLDING, 0x0002, SIM_ENC_U16,   &m_pm25,         1.0},
    {SIM_HOLDING, 0x0003, SIM_ENC_U16,   &m_co2,          1.0},
    {SIM_HOLDING, 0x0004, SIM_ENC_U16,   &m_tvoc,         1.0},
    {SIM_HOLDING, 0x0005, SIM_ENC_ZERO,  NULL,            0.0},
    {SIM_HOLDING, 0x0006, SIM_ENC_U16,   &m_pm10,         1.0},
};

/* xy-md02: XY-MD02-style meter; measurements in input registers, set-up in
 * holding registers (baud code 0 = 9600, 1 = 14400, 2 = 19200) */
static const struct sim_reg xy_md02_regs[] = {
    {SIM_INPUT,   0x0001, SIM_ENC_I16,   &m_temperature, 10.0},
    {SIM_INPUT,   0x0002, SIM_ENC_U16,   &m_humidity,    10.0},
    {SIM_HOLDING, 0x0101, SIM_ENC_UNIT,  NULL,            0.0},
    {SIM_HOLDING, 0x0102, SIM_ENC_ZERO,  NULL,            0.0},
};

/* co2-s8: SenseAir S8-style CO2 meter, default address 0xFE ("any sensor"):
 * IR1 meter status, IR2 alarm status, IR3 output status, IR4 CO2 */
static const struct sim_reg co2_s8_regs[] = {
    {SIM_INPUT, 0x0000, SIM_ENC_U16,   &m_status, 1.0},
    {SIM_INPUT, 0x0001, SIM_ENC_ZERO,  NULL,      0.0},
    {SIM_INPUT, 0x0002, SIM_ENC_ZERO,  NULL,      0.0},
    {SIM_INPUT, 0x0003, SIM_ENC_U16,   &m_co2,    1.0},
};

/* gas-lel: combustible gas detector; %LEL as f32 CDAB over 0x0000-0x0001,
 * alarm flag at 20 %LEL */
static const struct sim_reg gas_lel_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_F32_CDAB, &m_lel,  0.0},
    {SIM_HOLDING, 0x0002, SIM_ENC_FLAG_GE,  &m_lel, 20.0},
};

/* bed-mb: pressure-mat / radar bed monitor with an RS-485 Modbus option;
 * flags read 0/1, rates in whole beats and breaths per minute */
static const struct sim_reg bed_mb_regs[] = {
    {SIM_HOLDING, 0x0000, SIM_ENC_U16, &m_in_bed,   1.0},
    {SIM_HOLDING, 0x0001, SIM_ENC_U16, &m_hr,       1.0},
    {SIM_HOLDING, 0x0002, SIM_ENC_U16, &m_rr,       1.0},
    {SIM_HOLDING, 0x0003, SIM_ENC_U16, &m_movement, 1.0},
    {SIM_HOLDING, 0x0004, SIM_ENC_U16, &m_presence, 1.0},
};

/* call-panel: nurse-call / emergency panel; the room's contacts as discrete
 * inputs, the panel's own state in holding registers */
static const struct sim_reg call_panel_regs[] = {
    {SIM_DISCRETE, 0x0000, SIM_ENC_BIT, &m_sos,     0.0},
    {SIM_DISCRETE, 0x0001, SIM_ENC_BIT, &m_fall,    0.0},
    {SIM_DISCRETE, 0x0002, SIM_ENC_BIT, &m_call,    0.0},
    {SIM_HOLDING,  0x0000, SIM_ENC_U16, &m_battery, 1.0},
    {SIM_HOLDING,  0x0001, SIM_ENC_U16, &m_tamper,  1.0},
};

/* relay-4ch: 4-channel Modbus relay board driving a sounder, a strobe or a
 * nurse-call line; coils only */
static const struct sim_reg relay_4ch_regs[] = {
    {SIM_COIL, 0x0000, SIM_ENC_OUTPUT, NULL, 0.0},
    {SIM_COIL, 0x0001, SIM_ENC_OUTPUT, NULL, 0.0},
    {SIM_COIL, 0x0002, SIM_ENC_OUTPUT, NULL, 0.0},
    {SIM_COIL, 0x0003, SIM_ENC_OUTPUT, NULL, 0.0},
};

static void derive_bed(const struct sim_model *m, struct sim_derive *d);
static void derive_radar(const struct sim_model *m, struct sim_derive *d);

#define REGS(r) r, CH_ARRAY_LEN(r)
static const struct sim_model models[] = {
    {"jxct-th",    1,    {&m_humidity, &m_temperature}, 2, REGS(jxct_th_regs), NULL, false},
    {"air-board",  1,    {&m_humidity, &m_temperature, &m_pm25, &m_co2, &m_tvoc, &m_pm10}, 6,
                         REGS(air_board_regs), NULL, false},
    {"xy-md02",    1,    {&m_temperature, &m_humidity}, 2, REGS(xy_md02_regs), NULL, false},
    {"co2-s8",     0xFE, {&m_co2, &m_status}, 2, REGS(co2_s8_regs), NULL, false},
    {"gas-lel",    1,    {&m_lel}, 1, REGS(gas_lel_regs), NULL, false},
    {"bed-mb",     1,    {&m_in_bed, &m_hr, &m_rr, &m_movement, &m_presence}, 5,
                         REGS(bed_mb_regs), derive_bed, false},
    {"call-panel", 1,    {&m_sos, &m_fall, &m_call, &m_battery, &m_tamper}, 5,
                         REGS(call_panel_regs), NULL, false},
    {"relay-4ch",  1,    {NULL}, 0, REGS(relay_4ch_regs), NULL, false},
};

/* Devices that stream frames on their own (sim_radar.c) instead of
 * answering Modbus: a table of their own, so sim_model_names() keeps
 * naming the Modbus models and sim_model_radar_names() these. */
static const struct sim_model radar_models[] = {
    {"mr60-radar", 1,    {&m_in_bed, &m_hr, &m_rr, &m_movement, &m_presence, &m_motion,
                          &m_sleep_stage, &m_breath_state}, 8, NULL, 0, derive_radar, true},
};
// clang-format on

const struct sim_metric *const sim_wearable_metrics[SIM_WEAR_METRICS] = {
    [SIM_WEAR_BATTERY] = &m_battery, [SIM_WEAR_SOS] = &m_sos,    [SIM_WEAR_FALL] = &m_fall,
    [SIM_WEAR_WORN] = &m_band_worn,  [SIM_WEAR_HR] = &m_band_hr,
};

const struct sim_model *sim_model_find(const char *name)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(models); i++)
        if (strcmp(models[i].name, name) == 0)
            return &models[i];
    for (size_t i = 0; i < CH_ARRAY_LEN(radar_models); i++)
        if (strcmp(radar_models[i].name, name) == 0)
            return &radar_models[i];
    return NULL;
}

void sim_model_names(char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < CH_ARRAY_LEN(models) && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? " " : "", models[i].name);
}

void sim_model_radar_names(char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < CH_ARRAY_LEN(radar_models) && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? " " : "", radar_models[i].name);
}

int sim_model_metric(const struct sim_model *m, const char *name)
{
    for (size_t i = 0; i < m->nmetrics; i++)
        if (strcmp(m->metrics[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* A scenario that decides in_bed moves the resident: the bed's other
 * metrics, where no event decides them, follow as if the routine had put
 * the resident there (no heart rate in an empty bed, presence with them). */
static void derive_bed(const struct sim_model *m, struct sim_derive *d)
{
    size_t k = 0;
    while (k < m->nmetrics && m->metrics[k]->shape != SIM_SHAPE_IN_BED)
        k++;
    if (k == m->nmetrics || !d->held[k])
        return; /* the routine decides: the shaped values already agree */
    struct sim_bed bed = {.in_bed = d->values[k] >= 0.5, .near_s = INT64_MAX};
    for (size_t i = 0; i < m->nmetrics; i++)
        if (i != k && !d->held[i] && m->metrics[i]->shape != SIM_SHAPE_CURVE)
            d->values[i] = sim_value_shaped(m->metrics[i], d->seed, d->dev_key, d->t_ms,
                                            d->utc_offset_min, &bed);
}

/* What a radar infers from the bed's metrics: motion from presence and
 * movement, breathing state from the rate, and a sleep stage that cycles
 * through light and deep sleep every 90 minutes (about 25 of them deep) while
 * the resident lies still, awake when they move. */
static void derive_radar(const struct sim_model *m, struct sim_derive *d)
{
    derive_bed(m, d);
    enum { IN_BED, HR, RR, MOVEMENT, PRESENCE, MOTION, SLEEP_STAGE, BREATH_STATE };
    double *v = d->values;
    bool present = v[PRESENCE] >= 0.5, in_bed = v[IN_BED] >= 0.5;
    if (!d->held[MOTION])
        v[MOTION] = !present ? 0.0 : v[MOVEMENT] >= 30.0 ? 2.0 : 1.0;
    if (!d->held[BREATH_STATE])
        v[BREATH_STATE] = !in_bed || v[RR] <= 0.0 ? 0.0
                          : v[RR] > 24.0          ? 2.0
                          : v[RR] < 10.0          ? 3.0
                                                  : 1.0;
    if (!d->held[SLEEP_STAGE]) {
        int64_t minute = d->t_ms / 60000;
        v[SLEEP_STAGE] = !in_bed ? 0.0 : v[MOVEMENT] > 20.0 ? 1.0 : minute % 90 < 25 ? 3.0 : 2.0;
    }
}

bool sim_model_has_table(const struct sim_model *m, enum sim_table t)
{
    for (size_t i = 0; i < m->nregs; i++)
        if (m->regs[i].table == t)
            return true;
    return false;
}

/* Number of registers an encoding occupies. */
static unsigned reg_width(enum sim_enc e)
{
    return e == SIM_ENC_F32_CDAB ? 2 : 1;
}

modbus_mapping_t *sim_model_mapping_new(const struct sim_model *m)
{
    /* per table: [lo, hi) */
    unsigned lo[SIM_TABLES] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, hi[SIM_TABLES] = {0};
    for (size_t i = 0; i < m->nregs; i++) {
        const struct sim_reg *r = &m->regs[i];
        if (r->addr < lo[r->table])
            lo[r->table] = r->addr;
        if (r->addr + reg_width(r->enc) > hi[r->table])
            hi[r->table] = r->addr + reg_width(r->enc);
    }
    for (int t = 0; t < SIM_TABLES; t++)
        if (hi[t] == 0)
            lo[t] = 0;
    return modbus_mapping_new_start_address(lo[SIM_COIL], hi[SIM_COIL] - lo[SIM_COIL],
                                            lo[SIM_DISCRETE], hi[SIM_DISCRETE] - lo[SIM_DISCRETE],
                                            lo[SIM_HOLDING], hi[SIM_HOLDING] - lo[SIM_HOLDING],
                                            lo[SIM_INPUT], hi[SIM_INPUT] - lo[SIM_INPUT]);
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
        double v = 0.0;
        for (size_t k = 0; k < m->nmetrics && r->metric; k++)
            if (m->metrics[k] == r->metric)
                v = values[k];
        if (r->table == SIM_COIL || r->table == SIM_DISCRETE) {
            if (r->enc == SIM_ENC_OUTPUT)
                continue; /* the master's, not the model's */
            uint8_t *bits = r->table == SIM_COIL ? map->tab_bits : map->tab_input_bits;
            unsigned start =
                (unsigned)(r->table == SIM_COIL ? map->start_bits : map->start_input_bits);
            bits[r->addr - start] = r->enc == SIM_ENC_BIT && v >= 0.5 ? 1 : 0;
            continue;
        }
        uint16_t *tab = r->table == SIM_HOLDING ? map->tab_registers : map->tab_input_registers;
        unsigned start =
            (unsigned)(r->table == SIM_HOLDING ? map->start_registers : map->start_input_registers);
        uint16_t *reg = &tab[r->addr - start];
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
        case SIM_ENC_BIT:
            *reg = v >= 0.5 ? 1 : 0;
            break;
        case SIM_ENC_ZERO:
        case SIM_ENC_OUTPUT:
            *reg = 0;
            break;
        }
    }
}
