/* Small helpers shared by every program: clocks, durations, strings. */
#ifndef CAREHUB_UTIL_H
#define CAREHUB_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Wall clock in milliseconds since the Unix epoch. */
int64_t ch_now_ms(void);
/* Monotonic clock in milliseconds (for intervals and deadlines). */
int64_t ch_mono_ms(void);
/* The simulation clock, for benchmarks that play a simulated day faster
 * than it happens (tests/bench/bench_alarm_rate.py): with the environment
 * variable CAREHUB_SIM_CLOCK="START_MS,SPEED" (SPEED 1..10000), ch_now_ms
 * starts at START_MS (Unix epoch ms) and both clocks run SPEED times faster
 * than the real ones; ch_sleep_ms and ch_cond_wait_until wait accordingly
 * shorter (rounded up: never a busy loop). Nothing else (a library's own
 * timers: ch_sleep_real_ms waits on those) is sped up. Returns
 * whether it is on, and its speed (1 when off). Read once. */
bool ch_sim_clock(double *speed);
/* A moment on both clocks, taken together (ch_time_now). wall_ms
 * (CLOCK_REALTIME, Unix epoch ms) is a label for people and the wire: it can
 * step either way at any time (NTP, an installer, a board without a battery
 * clock booting in 1970). mono_ms (CLOCK_MONOTONIC) is what durations are
 * measured on: it never steps, but it means nothing across a reboot. Modules
 * that both label and time things take this pair, so that tests can drive
 * the two clocks apart. */
struct ch_time {
    int64_t wall_ms;
    int64_t mono_ms;
};

/* Both clocks now. */
struct ch_time ch_time_now(void);

/* Wall-clock step detection. Keep one watcher and look at it regularly
 * (care-edge: once a second): ch_clock_step() returns by how much the wall
 * clock moved beyond the monotonic clock since the last look (positive:
 * forward, negative: back) when that is more than limit_ms either way,
 * else 0. Every look re-bases, so one step is reported once, and slewing
 * (adjtime, a few hundred ppm) never adds up to a step. The first look
 * returns 0. Not thread-safe: one caller. */
struct ch_clock_watch {
    int64_t offset_ms; /* wall - mono at the last look */
    bool started;
};
int64_t ch_clock_step(struct ch_clock_watch *w, struct ch_time now, int64_t limit_ms);

/* Sleeps (on the simulation clock, when it is on); returns early only on a
 * signal. */
void ch_sleep_ms(int64_t ms);
/* Sleeps on the real clock, whatever the simulation clock: for waits on
 * another library's timers (Paho's). */
void ch_sleep_real_ms(int64_t ms);

/* Initialises a condition variable whose timed waits run on the monotonic
 * clock (wall-clock steps do not stretch or cut them). */
void ch_cond_init_monotonic(pthread_cond_t *c);
/* Waits on c (m held) until the monotonic time until_ms (ch_mono_ms), a
 * signal or a spurious wake-up. */
void ch_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t until_ms);

/* t rounded down (floor) or up (ceil) to a multiple of unit (> 0), also for
 * t < 0: the start of the UTC hour or day of a millisecond time. */
int64_t ch_floor_to(int64_t t, int64_t unit);
int64_t ch_ceil_to(int64_t t, int64_t unit);

/* Parses a duration: a number with a unit of ms, s, m, h or d ("500ms", "10s",
 * "1.5m"); a bare number is seconds. Returns 0 or CH_EINVAL. */
int ch_parse_duration_ms(const char *s, int64_t *out_ms);

/* Parses a whole number in decimal or 0x hex. Returns 0 or CH_EINVAL. */
int ch_parse_int(const char *s, long long *out);

/* Copies src into dst of size n, always terminated; returns false if cut. */
bool ch_strlcpy(char *dst, const char *src, size_t n);

/* Malloc that aborts on failure: carehub does not limp on after OOM. Caller frees. */
void *ch_xmalloc(size_t n);
void *ch_xcalloc(size_t n, size_t size);
void *ch_xrealloc(void *p, size_t n);
char *ch_xstrdup(const char *s);

/* True if s is a usable identifier for sites, gateways, devices, buses and
 * profiles: 1..64 chars of [A-Za-z0-9_.-], not starting with '.' or '-'.
 * Such ids are safe in MQTT topics, file names and InfluxDB tags. */
bool ch_valid_id(const char *s);

/* Display names people read ("3楼 东区 301", "护士小王"): 1..CH_NAME_BYTES
 * bytes of valid UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF), without control characters (C0, DEL, C1: they would break a
 * one-line log, a console row or an SMS), not starting or ending with a
 * space. Ids stay ASCII for topics and tags; names travel beside them. */
#define CH_NAME_BYTES 127
/* The length (1..4) of the valid UTF-8 sequence at p, of at most n bytes: a
 * shortest form of a scalar value (no surrogates, at most U+10FFFF); 0 if
 * it is not one. */
size_t ch_utf8_len(const unsigned char *p, size_t n);
/* Copies text src into dst of n bytes as one line for people: cut at a
 * character boundary when it does not fit, control characters made
 * spaces. */
void ch_utf8_copy(char *dst, const char *src, size_t n);
bool ch_valid_name(const char *s);

/* A growing NUL-terminated string (zero-initialise; ch_buf_take hands it
 * over). Aborts on OOM, like ch_xmalloc. */
struct ch_buf {
    char *s;
    size_t len, cap;
};
void ch_buf_add(struct ch_buf *b, const char *s, size_t n);
void ch_buf_str(struct ch_buf *b, const char *s); /* NULL: nothing */
/* The string (never NULL: "" when nothing was added), for the caller to
 * free; b is empty again. */
char *ch_buf_take(struct ch_buf *b);

/* FNV-1a over n bytes at p, continuing from h (start with CH_FNV1A_INIT):
 * a fast, stable 64-bit hash for tables keyed by topics, ids and MACs. Not
 * for anything an attacker can choose to collide on purpose when the table
 * is not bounded. */
#define CH_FNV1A_INIT UINT64_C(14695981039346656037)
uint64_t ch_fnv1a(uint64_t h, const void *p, size_t n);

/* A random 128-bit id as 32 hex chars (from getrandom). */
void ch_random_hex(char out[33]);

/* Makes s valid UTF-8 in place: every byte that does not start or continue a
 * well-formed sequence (overlong forms, surrogates and code points above
 * U+10FFFF included) becomes '?', and so does a sequence cut short at the
 * end (a "%.64s" may cut a character in half). JSON needs valid UTF-8; text
 * from the network may not be. Returns s. */
char *ch_utf8_fix(char *s);

#endif
