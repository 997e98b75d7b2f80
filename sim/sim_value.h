/* Simulated measurement values.
 *
 * The value of one metric of one simulated device at time t is a pure
 * function of (seed, device key, metric, t quantised to 1 s): a daily curve
 * plus noise drawn from a hash of those inputs, never from a shared PRNG
 * stream. So the same seed gives the same values whatever the order, number
 * or timing of the requests, and two devices never share noise. */
#ifndef CAREHUB_SIM_VALUE_H
#define CAREHUB_SIM_VALUE_H

#include <stdbool.h>
#include <stdint.h>

/* What drives a metric. The curve is the formula below; the bed shapes make
 * a bed sensor's metrics agree with one resident's daily routine
 * (sim_value_bed), so that nobody's heart beats in an empty bed. */
enum sim_shape {
    SIM_SHAPE_CURVE,    /* the formula below, always (the default: 0) */
    SIM_SHAPE_IN_BED,   /* 1 while the resident is in bed, else 0; the terms are unused */
    SIM_SHAPE_PRESENCE, /* 1 while in bed or at the bedside (just before getting in, just
                           after getting out), else 0 */
    SIM_SHAPE_VITAL,    /* the formula while in bed, 0 out of bed (heart and breathing rate) */
    SIM_SHAPE_ACTIVITY, /* a burst while getting in or out, the formula while in bed, 0 when
                           nobody is there (movement) */
};

/* How one metric behaves over a day. Every term is in engineering units:
 *   value = base + day * daily(h) + occ * occupancy(h)
 *         + spread * (fixed per-device offset in -1..1)
 *         + drift  * (smooth noise, knots every 10 minutes)
 *         + jitter * (noise drawn afresh every second),
 * clamped to min..max, where h is the local hour of day. */
struct sim_metric {
    const char *name; /* key in scenario files: "temperature", "co2" */
    const char *unit; /* for logs: "degC", "ppm" */
    double base, day, occ, spread, drift, jitter;
    double min, max;
    enum sim_shape shape;
};

/* Where a simulated bed's resident is. near_s is how far the time is from
 * the nearest scheduled getting in or out of bed, in seconds (INT64_MAX when
 * not known, e.g. when a scenario decides in_bed). */
struct sim_bed {
    bool in_bed;
    int64_t near_s;
};

/* Seconds around a getting in or out of bed during which the resident is at
 * the bedside: present, and moving a lot. */
#define SIM_BED_SETTLE_S 120

/* Stable 64-bit key of a string (FNV-1a): device names and metric names. */
uint64_t sim_value_key(const char *s);

/* Uniform noise in [-1, 1), a pure function of its arguments: what every
 * simulated term draws from (exposed for the home's RSSI and routines). */
double sim_value_noise(uint64_t seed, uint64_t dev, uint64_t metric, uint64_t salt, int64_t k);

/* Daily shape in -1..1: -1 at 05:00, +1 at 15:00, cosine in between (a
 * 10-hour rise and a 14-hour fall), for hour in [0, 24). */
double sim_value_daily(double hour);

/* Occupancy of a care room in 0..1: 0 at night, rising from 07:00 to a
 * peak at 13:30 and back to 0 at 20:00, for hour in [0, 24). */
double sim_value_occupancy(double hour);

/* The value of metric m of the device with key dev_key at Unix time t_ms
 * (quantised down to the second), with local time = UTC + utc_offset_min.
 * Bed shapes follow sim_value_bed() for the same device. */
double sim_value_at(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                    int utc_offset_min);

/* The same, with the resident where *bed says instead of where the routine
 * puts them: what a bed shows when a scenario moves its resident. */
double sim_value_shaped(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                        int utc_offset_min, const struct sim_bed *bed);

/* The daily routine of the resident of bed dev_key, a pure function of
 * (seed, dev_key, local day), like the noise. Each local day:
 *   - asleep from the evening before (bedtime 20:20-21:40) to 06:00-07:00,
 *     with one trip out of bed of 3-12 min starting between 00:30 and 03:30;
 *   - an afternoon nap starting 12:15-12:45, 60-90 min long;
 *   - out of bed the rest of the day.
 * Fills *out for Unix time t_ms with local time = UTC + utc_offset_min. */
void sim_value_bed(uint64_t seed, uint64_t dev_key, int64_t t_ms, int utc_offset_min,
                   struct sim_bed *out);

#endif
