/* The query parameters of both HTTP servers: care-hub's times
 * (api_parse_time: RFC 3339, a bare date, epoch milliseconds) and the
 * percent-decoding libmicrohttpd calls for every URL and argument
 * (ch_http_unescape), on the input as one C string (cut at its first NUL, as
 * libmicrohttpd hands it over).
 *
 * A time that parses is made of date and time characters only (no text
 * reaches an InfluxQL condition through it); epoch milliseconds are the
 * number written; a date is the UTC instant timegm(3) gives for its fields,
 * give or take the offset and fraction; and a time in 1970 .. 9999 UTC
 * formats back (RFC 3339, milliseconds, Z) to a string that parses to the
 * very same instant.
 *
 * Decoding never lengthens the string, shortens it by 2 per escape
 * decoded, never produces a NUL ("%00" stays as written), leaves a string
 * without '%' alone, and agrees with a plain decoder written here. */
#include "api.h"
#include "fuzz.h"
#include "httpd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DAY_MS 86400000LL

static int hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The decoding expected: %XX of two hex digits but %00, else the byte. */
static size_t reference_unescape(const char *in, char *out)
{
    size_t o = 0;
    for (size_t i = 0; in[i];) {
        int hi = in[i] == '%' ? hex(in[i + 1]) : -1, lo = hi >= 0 ? hex(in[i + 2]) : -1;
        if (hi >= 0 && lo >= 0 && (hi || lo)) {
            out[o++] = (char)(hi * 16 + lo);
            i += 3;
        } else {
            out[o++] = in[i++];
        }
    }
    out[o] = '\0';
    return o;
}

static void check_unescape(const char *s, size_t n)
{
    char *buf = malloc(n + 1), *ref = malloc(n + 1);
    CHECK(buf && ref);
    memcpy(buf, s, n + 1);
    size_t m = ch_http_unescape(NULL, NULL, buf);
    CHECK(m <= n && strlen(buf) == m); /* never longer, never a NUL inside */
    CHECK((n - m) % 2 == 0 && (n - m) / 2 <= n / 3);
    CHECK(strchr(s, '%') || !strcmp(buf, s));
    CHECK(reference_unescape(s, ref) == m && !memcmp(ref, buf, m + 1));
    free(buf);
    free(ref);
}

/* "YYYY-MM-DD" at s as timegm(3) sees it, in ms; -1 if not that shape. */
static int64_t date_ms(const char *s)
{
    struct tm tm = {0};
    int y, mo, d, used = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    return (int64_t)timegm(&tm) * 1000;
}

static void check_time(const char *s, size_t n)
{
    int64_t ms;
    if (api_parse_time(s, &ms) != 0)
        return;
    CHECK(strspn(s, "0123456789-:.+TtZz ") == n);
    if (strspn(s, "0123456789") == n) { /* epoch milliseconds */
        CHECK(ms == strtoll(s, NULL, 10));
        char again[32];
        int64_t back;
        snprintf(again, sizeof again, "%lld", (long long)ms);
        CHECK(api_parse_time(again, &back) == 0 && back == ms);
        return;
    }
    /* a date, then perhaps a time of day, a fraction and an offset */
    int64_t day = date_ms(s);
    CHECK(day >= 0 && day < 253402300800000LL); /* 1970 .. 9999 */
    CHECK(ms > day - DAY_MS && ms < day + 2 * DAY_MS);
    CHECK(n > 10 || ms == day);
    if (ms < 0 || ms >= 253402300800000LL)
        return; /* 1970-01-01 east of UTC, 9999-12-31 west of it: no 4-digit year */
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    CHECK(gmtime_r(&secs, &tm));
    char iso[96]; /* ints as wide as gcc fears */
    snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    int64_t back;
    CHECK(api_parse_time(iso, &back) == 0 && back == ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n = strlen(s); /* as libmicrohttpd hands it over: to the first NUL */
    check_time(s, n);
    check_unescape(s, n);
    free(s);
    return 0;
}
