#include "sim_radar.h"

#include "radar_frame.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MOVEMENT_PERIOD_MS  1000
#define VITALS_PERIOD_MS    3000
#define HEARTBEAT_PERIOD_MS 60000
#define ANSWER_MAX          1024 /* queued answer bytes; a flood of queries beyond is dropped */

/* Where each normalised metric travels: control word, report command. */
static const struct {
    uint8_t control, command;
} wire[RADAR_M_COUNT] = {
    [RADAR_M_PRESENCE] = {RADAR_CTL_PRESENCE, 0x01},
    [RADAR_M_MOTION] = {RADAR_CTL_PRESENCE, 0x02},
    [RADAR_M_MOVEMENT] = {RADAR_CTL_PRESENCE, 0x03},
    [RADAR_M_BREATH_STATE] = {RADAR_CTL_BREATH, 0x01},
    [RADAR_M_RR] = {RADAR_CTL_BREATH, 0x02},
    [RADAR_M_HR] = {RADAR_CTL_HEART, 0x02},
    [RADAR_M_IN_BED] = {RADAR_CTL_SLEEP, 0x01},
    [RADAR_M_SLEEP_STAGE] = {RADAR_CTL_SLEEP, 0x02},
};

/* Reported when they change; the others periodically. */
static bool is_state(int m)
{
    return m != RADAR_M_MOVEMENT && m != RADAR_M_RR && m != RADAR_M_HR;
}

struct sim_radar {
    const struct sim_slave *slave;
    int idx[RADAR_M_COUNT]; /* model metric of each radar metric, or -1 */
    int last_code[RADAR_M_COUNT];
    int64_t next_tick, next_movement, next_vitals, next_heartbeat; /* monotonic; 0: at once */
    struct radar_parser *in;
    uint8_t answers[ANSWER_MAX];
    size_t nanswers;
    uint64_t seq;   /* frames sent, for the corruption pattern */
    uint64_t noise; /* xorshift state for noise bytes */
    struct sim_radar_stats st;
};

struct sim_radar *sim_radar_new(const struct sim_slave *s)
{
    struct sim_radar *r = ch_xcalloc(1, sizeof *r);
    r->slave = s;
    const struct sim_model *m = sim_slave_model(s);
    for (int k = 0; k < RADAR_M_COUNT; k++) {
        r->idx[k] = sim_model_metric(m, radar_metric_name(k));
        r->last_code[k] = -1;
    }
    r->in = radar_parser_new();
    r->noise = 0x9E3779B97F4A7C15ull ^ sim_value_key(sim_slave_name(s));
    return r;
}

void sim_radar_free(struct sim_radar *r)
{
    if (!r)
        return;
    radar_parser_free(r->in);
    free(r);
}

const struct sim_radar_stats *sim_radar_stats(const struct sim_radar *r)
{
    return &r->st;
}

/* The radar's code for normalised value v of metric m (radar_frame.h). */
static int code_of(int m, double v)
{
    int x = (int)lround(v);
    switch (m) {
    case RADAR_M_BREATH_STATE: /* 0 none, 1 normal, 2 fast, 3 slow -> 4, 1, 2, 3 */
        return x <= 0 ? 4 : x > 3 ? 3 : x;
    case RADAR_M_SLEEP_STAGE: /* 0 none, 1 awake, 2 light, 3 deep -> 3, 2, 1, 0 */
        return 3 - (x < 0 ? 0 : x > 3 ? 3 : x);
    case RADAR_M_MOVEMENT:
        return x < 0 ? 0 : x > 100 ? 100 : x;
    default:
        return x < 0 ? 0 : x > 255 ? 255 : x;
    }
}

static uint8_t noise_byte(struct sim_radar *r)
{
    r->noise ^= r->noise << 13;
    r->noise ^= r->noise >> 7;
    r->noise ^= r->noise << 17;
    return (uint8_t)(r->noise >> 24);
}

/* Appends one frame (with the garbage fault's damage if garbage). */
static void emit(struct sim_radar *r, uint8_t *out, size_t cap, size_t *k, uint8_t ctl, uint8_t cmd,
                 uint8_t code, bool garbage)
{
    uint8_t noise[8];
    size_t nn = 0;
    if (garbage) {
        nn = 1 + noise_byte(r) % 6;
        for (size_t i = 0; i < nn; i++)
            noise[i] = noise_byte(r);
        if (nn >= 2 && r->seq % 3 == 0) { /* a false header with a believable length */
            noise[nn - 2] = RADAR_HEAD0;
            noise[nn - 1] = RADAR_HEAD1;
        } else if (r->seq % 5 == 0) {
            noise[nn - 1] = RADAR_HEAD0;
        }
    }
    uint8_t frame[RADAR_FRAME_OVERHEAD + 1];
    size_t fl = radar_frame_build(frame, sizeof frame, ctl, cmd, &code, 1);
    if (*k + nn + fl > cap)
        return; /* the line is backed up: a real radar's UART drops too */
    memcpy(out + *k, noise, nn);
    *k += nn;
    r->st.noise += nn;
    r->seq++;
    if (garbage && r->seq % 4 == 0) {
        frame[fl - 3] ^= 0x5A; /* checksum */
        r->st.corrupted++;
    } else if (garbage && r->seq % 9 == 0) {
        frame[fl - 1] = 0x44; /* tail */
        r->st.corrupted++;
    }
    memcpy(out + *k, frame, fl);
    *k += fl;
    r->st.frames++;
}

void sim_radar_input(struct sim_radar *r, const uint8_t *buf, size_t n, int64_t start_ms,
                     int64_t at_ms)
{
    if (sim_slave_fault(r->slave, at_ms) == SIM_FAULT_SILENT)
        return;
    double values[SIM_MODEL_MAX_METRICS];
    sim_slave_values(r->slave, start_ms, at_ms, values);
    uint64_t rej_before = 0;
    const struct radar_parser_stats *ps = radar_parser_stats(r->in);
    for (int i = 0; i < RADAR_REJ_COUNT; i++)
        rej_before += ps->rejected[i];
    struct radar_frame f;
    bool got = false;
    while (n > 0 || got) {
        size_t used = radar_parser_feed(r->in, buf, n, &f, &got);
        buf += used;
        n -= used;
        if (!got)
            continue;
        r->st.queries++;
        if (!(f.command & RADAR_CMD_QUERY))
            continue; /* a setting: not simulated, no answer */
        for (int m = 0; m < RADAR_M_COUNT; m++) {
            if (wire[m].control != f.control ||
                wire[m].command != (f.command & (uint8_t)~RADAR_CMD_QUERY) || r->idx[m] < 0)
                continue;
            uint8_t code = (uint8_t)code_of(m, values[r->idx[m]]);
            uint8_t fr[RADAR_FRAME_OVERHEAD + 1];
            size_t fl = radar_frame_build(fr, sizeof fr, f.control, f.command, &code, 1);
            if (r->nanswers + fl <= sizeof r->answers) {
                memcpy(r->answers + r->nanswers, fr, fl);
                r->nanswers += fl;
                r->st.answers++;
            }
        }
    }
    uint64_t rej = 0;
    for (int i = 0; i < RADAR_REJ_COUNT; i++)
        rej += ps->rejected[i];
    r->st.bad_input += rej - rej_before;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

size_t sim_radar_output(struct sim_radar *r, int64_t mono_ms, int64_t start_ms, int64_t at_ms,
                        uint8_t *out, size_t cap, int64_t *next_ms)
{
    size_t k = 0;
    enum sim_fault fault = sim_slave_fault(r->slave, at_ms);
    bool garbage = fault == SIM_FAULT_GARBAGE;
    if (fault == SIM_FAULT_SILENT) {
        r->nanswers = 0;
    } else if (r->nanswers && r->nanswers <= cap) {
        memcpy(out, r->answers, r->nanswers);
        k = r->nanswers;
        r->st.frames += r->nanswers / (RADAR_FRAME_OVERHEAD + 1);
        r->nanswers = 0;
    }
    if (mono_ms >= r->next_tick && fault != SIM_FAULT_SILENT) {
        double values[SIM_MODEL_MAX_METRICS];
        sim_slave_values(r->slave, start_ms, at_ms, values);
        bool movement = mono_ms >= r->next_movement, vitals = mono_ms >= r->next_vitals;
        bool in_bed = r->idx[RADAR_M_IN_BED] >= 0 && values[r->idx[RADAR_M_IN_BED]] >= 0.5;
        for (int m = 0; m < RADAR_M_COUNT; m++) {
            if (r->idx[m] < 0)
                continue;
            int code = code_of(m, values[r->idx[m]]);
            bool due = is_state(m)             ? code != r->last_code[m]
                       : m == RADAR_M_MOVEMENT ? movement
                                               : vitals && in_bed;
            if (!due)
                continue;
            emit(r, out, cap, &k, wire[m].control, wire[m].command, (uint8_t)code, garbage);
            r->last_code[m] = code;
        }
        if (mono_ms >= r->next_heartbeat) {
            emit(r, out, cap, &k, RADAR_CTL_SYSTEM, 0x01, RADAR_QUERY_DATA, garbage);
            r->next_heartbeat = mono_ms + HEARTBEAT_PERIOD_MS;
        }
        if (movement)
            r->next_movement = mono_ms + MOVEMENT_PERIOD_MS;
        if (vitals)
            r->next_vitals = mono_ms + VITALS_PERIOD_MS;
        r->next_tick = mono_ms + SIM_RADAR_TICK_MS;
    } else if (fault == SIM_FAULT_SILENT) {
        r->next_tick = mono_ms + SIM_RADAR_TICK_MS;
        /* a radar back from silence reports its states afresh */
        for (int m = 0; m < RADAR_M_COUNT; m++)
            r->last_code[m] = -1;
    }
    *next_ms = min64(r->next_tick, min64(r->next_movement, r->next_vitals));
    return k;
}
