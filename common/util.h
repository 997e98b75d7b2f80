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
/* Sleeps; returns early only on a signal. */
void ch_sleep_ms(int64_t ms);

/* Initialises a condition variable whose timed waits run on the monotonic
 * clock (wall-clock steps do not stretch or cut them). */
void ch_cond_init_monotonic(pthread_cond_t *c);
/* Waits on c (m held) until the monotonic time until_ms (ch_mono_ms), a
 * signal or a spurious wake-up. */
void ch_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t until_ms);

/* Parses a duration: a number with a unit of ms, s, m or h ("500ms", "10s",
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

/* A random 128-bit id as 32 hex chars (from getrandom). */
void ch_random_hex(char out[33]);

#endif
