#include "sim_value.h"

#include <math.h>

/* Salts keep the three noise terms of one metric independent. */
enum { SALT_SPREAD = 1, SALT_DRIFT = 2, SALT_JITTER = 3 };

#define DRIFT_KNOT_S 600 /* smooth noise: one random knot every 10 minutes */

uint64_t sim_value_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3u;
    }
    return h;
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

double sim_value_at(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                    int utc_offset_min)
{
    uint64_t mk = sim_value_key(m->name);
    int64_t t_s = floor_div(t_ms, 1000);
    int64_t local_s = t_s + (int64_t)utc_offset_min * 60;
    int64_t sec_of_day = local_s - floor_div(local_s, 86400) * 86400;
    double hour = (double)sec_of_day / 3600.0;

    double v = m->base + m->day * sim_value_daily(hour) + m->occ * sim_value_occupancy(hour);
    v += m->spread * noise(seed, dev_key, mk, SALT_SPREAD, 0);
    v += m->drift * smooth_noise(seed, dev_key, mk, t_s, DRIFT_KNOT_S);
    v += m->jitter * noise(seed, dev_key, mk, SALT_JITTER, t_s);
    if (v < m->min)
        v = m->min;
    if (v > m->max)
        v = m->max;
    return v;
}
