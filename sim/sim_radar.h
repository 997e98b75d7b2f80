/* A simulated 60 GHz sleep radar (R60ABD1 family) on a serial line: what it
 * sends on its own and what it answers, as a pure function of time and the
 * bytes the host wrote. Transport-free: sim_server.c writes the bytes.
 *
 * What it sends (timing in real time, values at the scenario time), close
 * to what a real module does (drivers/radar/radar_frame.h has the codes):
 *   - presence, motion, breathing state, in/out of bed and sleep stage when
 *     they change (checked every SIM_RADAR_TICK_MS), and at start;
 *   - body movement every second;
 *   - heart and breathing rate every 3 s while someone is in bed;
 *   - a heartbeat frame every minute;
 *   - the answer to every query the host sends (same control word, the
 *     query's command word, the current value).
 * Fault `garbage` puts 1-6 noise bytes (some of them false 53 59 headers)
 * before every frame, gives every 4th frame a wrong checksum and every 9th
 * a wrong tail; fault `silent` sends and answers nothing. */
#ifndef CAREHUB_SIM_RADAR_H
#define CAREHUB_SIM_RADAR_H

#include "sim_slave.h"

#include <stddef.h>
#include <stdint.h>

#define SIM_RADAR_TICK_MS 200

struct sim_radar;

struct sim_radar_stats {
    uint64_t frames;    /* sent */
    uint64_t answers;   /* answers to queries among them */
    uint64_t corrupted; /* sent with a wrong checksum or tail (garbage fault) */
    uint64_t noise;     /* noise bytes sent between frames */
    uint64_t queries;   /* well-formed frames received */
    uint64_t bad_input; /* frames received that could not be parsed (rejected) */
};

/* A radar showing slave s (borrowed; a model with radar set). Aborts on OOM. */
struct sim_radar *sim_radar_new(const struct sim_slave *s);
void sim_radar_free(struct sim_radar *r);

/* Takes bytes the host wrote (borrowed, any chunking) and queues the
 * answers to its queries, for the values at Unix time start_ms + at_ms. */
void sim_radar_input(struct sim_radar *r, const uint8_t *buf, size_t n, int64_t start_ms,
                     int64_t at_ms);

/* Appends to out (capacity cap) the bytes due at monotonic time mono_ms:
 * queued answers and the reports whose time has come. Returns how many
 * bytes; *next_ms is the monotonic time of the next report. */
size_t sim_radar_output(struct sim_radar *r, int64_t mono_ms, int64_t start_ms, int64_t at_ms,
                        uint8_t *out, size_t cap, int64_t *next_ms);

/* Borrowed; valid while r lives. */
const struct sim_radar_stats *sim_radar_stats(const struct sim_radar *r);

#endif
