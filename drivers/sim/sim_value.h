/* Simulated measurement values.
 *
 * The value of one metric of one simulated device at time t is a pure
 * function of (seed, device key, metric, t quantised to 1 s): a daily curve
 * plus noise drawn from a hash of those inputs, never from a shared PRNG
 * stream. So the same seed gives the same values whatever the order, number
 * or timing of the requests, and two devices never share noise. */
#ifndef CAREHUB_SIM_VALUE_H
#define CAREHUB_SIM_VALUE_H

#include <stdint.h>

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
};

/* Stable 64-bit key of a string (FNV-1a): device names and metric names. */
uint64_t sim_value_key(const char *s);

/* Daily shape in -1..1: -1 at 05:00, +1 at 15:00, cosine in between (a
 * 10-hour rise and a 14-hour fall), for hour in [0, 24). */
double sim_value_daily(double hour);

/* Occupancy of a care room in 0..1: 0 at night, rising from 07:00 to a
 * peak at 13:30 and back to 0 at 20:00, for hour in [0, 24). */
double sim_value_occupancy(double hour);

/* The value of metric m of the device with key dev_key at Unix time t_ms
 * (quantised down to the second), with local time = UTC + utc_offset_min. */
double sim_value_at(const struct sim_metric *m, uint64_t seed, uint64_t dev_key, int64_t t_ms,
                    int utc_offset_min);

#endif
