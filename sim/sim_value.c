#include "sim_value.h"
#include "util.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Salts keep the three noise terms of one metric independent. */
enum { SALT_SPREAD = 1, SALT_DRIFT = 2, SALT_JITTER = 3 };

/* Salts of the bed routine's daily draws, all keyed by the local day. */
enum {
    SALT_BEDTIME = 10,
    SALT_WAKE = 11,
    SALT_TRIP_AT = 12,
    SALT_TRIP_LEN = 13,
    SALT_NAP_AT = 14,
    SALT_NAP_LEN = 15,
    SALT_BURST = 16,
};

#define DRIFT_KNOT_S 600 /* smooth noise: one random knot every 10 minutes */

uint64_t sim_value_key(const char *s)
{
    return ch_fnv1a(CH_FNV1A_INIT, s, strlen(s));
}

/* splitmix64 finaliser: a strong 64-bit bit mixer. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    x ^= x >> 31;
    return x;
}

/* Uniform in [-1, 1), a pure function of its arguments. */
static double noise(uint64_t seed, uint64_t dev, uint64_t metric, uint64_t salt, int64_t k)
{
    uint64_t h = mix(seed ^ 0x9e3779b97f4a7c15u);
    h = mix(h ^ dev);
    h = mix(h ^ metric);
    h = mix(h ^ salt);
    h = mix(h ^ (uint64_t)k);
    return (double)(h >> 11) * 0x1.0p-52 - 1.0;
}

double sim_value_noise(uint64_t seed, uint64_t dev, uint64_t metric, uint64_t salt, int64_t k)
{
    return noise(seed, dev, metric, salt, k);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Noise that moves smoothly between random knots every period seconds. */
static double smooth_noise(uint64_t seed, uint64_t dev, uint64_t metric, int64_t t_s,
                           int64_t period)
{
    int64_t k = floor_div(t_s, period);
    double f = (double)(t_s - k * period) / (double)period;
    double s = f * f * (3.0 - 2.0 * f);
    double a = noise(seed, dev, metric, SALT_DRIFT, k);
    double b = noise(seed, dev, metric, SALT_DRIFT, k + 1);
    return a + (b - a) * s;
}

double sim_value_daily(double hour)
{
    if (hour >= 5.0 && hour < 15.0)
        return -cos(M_PI * (hour - 5.0) / 10.0);
    double since_peak = hour >= 15.0 ? hour - 15.0 : hour + 9.0; /* 0..14 h */
    return cos(M_PI * since_peak / 14.0);
}

double sim_value_occupancy(double hour)
{
    if (hour < 7.0 || hour >= 20.0)
        return 0.0;
    return sin(M_PI * (hour - 7.0) / 13.0);
}

/* Local time split into day number and second of that day. */
static void local_time(int64_t t_ms, int utc_offset_min, int64_t *day, int64_t *sec)
{
    int64_t local_s = floor_div(t_ms, 1000) + (int64_t)utc_offset_min * 60;
    *day = floor_div(local_s, 86400);
    *sec = local_s - *day * 86400;
}

/* The formula of struct sim_metric. */
static double curve(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                    int utc_offset_min)
{
    uint64_t mk = sim_value_key(m->name);
    int64_t t_s = floor_div(t_ms, 1000);
    int64_t day, sec_of_day;
    local_time(t_ms, utc_offset_min, &day, &sec_of_day);
    double hour = (double)sec_of_day / 3600.0;

    double v = m->base + m->day * sim_value_daily(hour) + m->occ * sim_value_occupancy(hour);
    v += m->spread * noise(seed, dev_key, mk, SALT_SPREAD, 0);
    v += m->drift * smooth_noise(seed, dev_key, mk, t_s, DRIFT_KNOT_S);
    v += m->jitter * noise(seed, dev_key, mk, SALT_JITTER, t_s);
    return v;
}

static double clamp(const struct sim_metric *m, double v)
{
    if (v < m->min)
        v = m->min;
    if (v > m->max)
        v = m->max;
    return v;
}

/* The six moments of local day `day` the resident gets out of or into bed,
 * in seconds since that day's midnight, in time order: out for the night
 * trip, back in, up in the morning, in for the nap, up from it, in for the
 * night. Odd entries are "into bed". */
#define BED_MOVES 6
static void bed_moves(uint64_t seed, uint64_t dev_key, int64_t day, int64_t out[BED_MOVES])
{
    uint64_t k = sim_value_key("bed-routine");
    double trip_at = 2.0 * 3600 + 1.5 * 3600 * noise(seed, dev_key, k, SALT_TRIP_AT, day);
    double trip_len = 450.0 + 270.0 * noise(seed, dev_key, k, SALT_TRIP_LEN, day);
    double wake = 6.5 * 3600 + 1800.0 * noise(seed, dev_key, k, SALT_WAKE, day);
    double nap_at = 12.5 * 3600 + 900.0 * noise(seed, dev_key, k, SALT_NAP_AT, day);
    double nap_len = 4500.0 + 900.0 * noise(seed, dev_key, k, SALT_NAP_LEN, day);
    double bedtime = 21.0 * 3600 + 2400.0 * noise(seed, dev_key, k, SALT_BEDTIME, day);
    out[0] = (int64_t)trip_at;
    out[1] = out[0] + (int64_t)trip_len;
    out[2] = (int64_t)wake;
    out[3] = (int64_t)nap_at;
    out[4] = out[3] + (int64_t)nap_len;
    out[5] = (int64_t)bedtime;
}

void sim_value_bed(uint64_t seed, uint64_t dev_key, int64_t t_ms, int utc_offset_min,
                   struct sim_bed *out)
{
    int64_t day, sec;
    local_time(t_ms, utc_offset_min, &day, &sec);
    int64_t moves[BED_MOVES];
    bed_moves(seed, dev_key, day, moves);
    /* In bed at midnight; every move toggles. */
    out->in_bed = true;
    for (size_t i = 0; i < BED_MOVES && moves[i] <= sec; i++)
        out->in_bed = i % 2 == 1;
    /* The nearest move may be the previous evening's bedtime or the next
     * night's trip. */
    int64_t prev[BED_MOVES], next[BED_MOVES];
    bed_moves(seed, dev_key, day - 1, prev);
    bed_moves(seed, dev_key, day + 1, next);
    int64_t near = sec - (prev[BED_MOVES - 1] - 86400);
    int64_t to_next = next[0] + 86400 - sec;
    if (to_next < near)
        near = to_next;
    for (size_t i = 0; i < BED_MOVES; i++) {
        int64_t d = sec >= moves[i] ? sec - moves[i] : moves[i] - sec;
        if (d < near)
            near = d;
    }
    out->near_s = near;
}

double sim_value_shaped(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                        int utc_offset_min, const struct sim_bed *bed)
{
    bool settling = bed->near_s <= SIM_BED_SETTLE_S;
    switch (m->shape) {
    case SIM_SHAPE_CURVE:
        break;
    case SIM_SHAPE_IN_BED:
        return bed->in_bed ? 1.0 : 0.0;
    case SIM_SHAPE_PRESENCE:
        return bed->in_bed || settling ? 1.0 : 0.0;
    case SIM_SHAPE_VITAL:
        if (!bed->in_bed)
            return 0.0;
        break;
    case SIM_SHAPE_ACTIVITY:
        if (settling) {
            /* sitting up, turning, standing: the mat and the radar see a lot */
            int64_t t_s = floor_div(t_ms, 1000);
            uint64_t mk = sim_value_key(m->name);
            return clamp(m, 65.0 + 20.0 * noise(seed, dev_key, mk, SALT_BURST, t_s));
        }
        if (!bed->in_bed)
            return 0.0;
        break;
    }
    return clamp(m, curve(m, seed, dev_key, t_ms, utc_offset_min));
}

double sim_value_at(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                    int utc_offset_min)
{
    if (m->shape == SIM_SHAPE_CURVE)
        return clamp(m, curve(m, seed, dev_key, t_ms, utc_offset_min));
    struct sim_bed bed;
    sim_value_bed(seed, dev_key, t_ms, utc_offset_min, &bed);
    return sim_value_shaped(m, seed, dev_key, t_ms, utc_offset_min, &bed);
}
