#include "util.h"
#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The simulation clock (util.h): off unless CAREHUB_SIM_CLOCK is set. */
static struct {
    bool on;
    double speed;
    int64_t wall0_ms; /* simulated wall time at mono0 */
    int64_t mono0_ns; /* real monotonic time when it was read */
} sim_clock;
static pthread_once_t sim_clock_once = PTHREAD_ONCE_INIT;

static void sim_clock_init(void)
{
    const char *e = getenv("CAREHUB_SIM_CLOCK");
    long long start;
    double speed;
    char end;
    if (!e || sscanf(e, "%lld,%lf%c", &start, &speed, &end) != 2 || !(speed >= 1 && speed <= 1e4))
        return;
    sim_clock.mono0_ns = clock_ns(CLOCK_MONOTONIC);
    sim_clock.wall0_ms = start;
    sim_clock.speed = speed;
    sim_clock.on = true;
}

/* Simulated ms elapsed since mono0 (the real clock's ns scaled). */
static int64_t sim_elapsed_ms(void)
{
    return (int64_t)((double)(clock_ns(CLOCK_MONOTONIC) - sim_clock.mono0_ns) * sim_clock.speed /
                     1e6);
}

bool ch_sim_clock(double *speed)
{
    pthread_once(&sim_clock_once, sim_clock_init);
    if (speed)
        *speed = sim_clock.on ? sim_clock.speed : 1.0;
    return sim_clock.on;
}

int64_t ch_now_ms(void)
{
    if (!ch_sim_clock(NULL))
        return clock_ns(CLOCK_REALTIME) / 1000000;
    return sim_clock.wall0_ms + sim_elapsed_ms();
}

int64_t ch_mono_ms(void)
{
    if (!ch_sim_clock(NULL))
        return clock_ns(CLOCK_MONOTONIC) / 1000000;
    return sim_clock.mono0_ns / 1000000 + sim_elapsed_ms();
}

struct ch_time ch_time_now(void)
{
    struct ch_time t;
    t.mono_ms = ch_mono_ms();
    t.wall_ms = ch_now_ms();
    return t;
}

int64_t ch_clock_step(struct ch_clock_watch *w, struct ch_time now, int64_t limit_ms)
{
    int64_t offset = now.wall_ms - now.mono_ms;
    int64_t step = w->started ? offset - w->offset_ms : 0;
    w->offset_ms = offset;
    w->started = true;
    return step > limit_ms || step < -limit_ms ? step : 0;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}

void ch_sleep_ms(int64_t ms)
{
    double speed;
    ch_sim_clock(&speed);
    sleep_ns((int64_t)((double)ms * 1e6 / speed));
}

void ch_sleep_real_ms(int64_t ms)
{
    sleep_ns(ms * 1000000);
}

void ch_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

void ch_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t until_ms)
{
    if (until_ms > INT64_MAX / 2000000) /* "never" (INT64_MAX): about 146 years */
        until_ms = INT64_MAX / 2000000;
    int64_t ns = until_ms * 1000000;
    double speed;
    if (ch_sim_clock(&speed)) { /* simulated -> real monotonic, rounded up */
        int64_t mono0_ms = sim_clock.mono0_ns / 1000000;
        ns = sim_clock.mono0_ns + (int64_t)ceil((double)(until_ms - mono0_ms) * 1e6 / speed);
    }
    if (ns < 0)
        ns = 0;
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = (long)(ns % 1000000000)};
    pthread_cond_timedwait(c, m, &ts);
}

int64_t ch_floor_to(int64_t t, int64_t unit)
{
    return t - ((t % unit) + unit) % unit;
}

int64_t ch_ceil_to(int64_t t, int64_t unit)
{
    return -ch_floor_to(-t, unit);
}

int ch_parse_duration_ms(const char *s, int64_t *out_ms)
{
    if (!s || !*s)
        return CH_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return CH_EINVAL;
    double mult;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return CH_EINVAL;
    double ms = v * mult;
    if (ms > 9.0e15)
        return CH_EINVAL;
    *out_ms = (int64_t)llround(ms);
    return 0;
}

int ch_parse_int(const char *s, long long *out)
{
    if (!s || !*s)
        return CH_EINVAL;
    /* decimal, or hex with 0x; never octal: an installer's "0010" means ten */
    int base = 10;
    const char *d = s;
    if (*d == '-' || *d == '+')
        d++;
    if (d[0] == '0' && (d[1] == 'x' || d[1] == 'X'))
        base = 16;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, base);
    if (errno || end == s || *end != '\0')
        return CH_EINVAL;
    *out = v;
    return 0;
}

bool ch_strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);
    if (n == 0)
        return len == 0;
    size_t c = len < n - 1 ? len : n - 1;
    memcpy(dst, src, c);
    dst[c] = '\0';
    return c == len;
}

static void oom(void)
{
    fputs("carehub: out of memory\n", stderr);
    abort();
}

void *ch_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *ch_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *ch_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom();
    return q;
}

char *ch_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        oom();
    return p;
}

bool ch_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

size_t ch_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len = c < 0x80             ? 1
                 : (c & 0xE0) == 0xC0 ? 2
                 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4
                                      : 0;
    if (!len || len > n || (len == 2 && c < 0xC2))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    uint32_t cp = len == 1   ? c
                  : len == 2 ? (uint32_t)(c & 0x1F)
                  : len == 3 ? (uint32_t)(c & 0x0F)
                             : (uint32_t)(c & 0x07);
    for (size_t i = 1; i < len; i++)
        cp = cp << 6 | (p[i] & 0x3F);
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0; /* overlong, out of range, or a surrogate */
    return len;
}

void ch_utf8_copy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
            len--; /* src[len] would start the cut sequence */
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    dst[len] = '\0';
}

bool ch_valid_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CH_NAME_BYTES || s[0] == ' ' || s[len - 1] == ' ')
        return false;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = ch_utf8_len((const unsigned char *)s + i, len - i);
        /* C0 controls and DEL; C1 controls are U+0080..U+009F (0xC2 0x80..0x9F) */
        if (!n || c < 0x20 || c == 0x7f || (c == 0xC2 && (unsigned char)s[i + 1] < 0xA0))
            return false;
        i += n;
    }
    return true;
}

void ch_buf_add(struct ch_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = ch_xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void ch_buf_str(struct ch_buf *b, const char *s)
{
    if (s)
        ch_buf_add(b, s, strlen(s));
}

char *ch_buf_take(struct ch_buf *b)
{
    char *s = b->s ? b->s : ch_xstrdup("");
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

void ch_random_hex(char out[33])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* getrandom on Linux >= 3.17 does not fail for 16 bytes; fall back anyway */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)((ts.tv_nsec >> (i % 8)) ^ (ts.tv_sec >> i) ^ (long)i * 131);
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629, table 3-7 of
 * Unicode), or 0. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* at most U+10FFFF */
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

char *ch_utf8_fix(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
    return s;
}

uint64_t ch_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}
