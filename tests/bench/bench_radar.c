/* Radar frames parsed per second (drivers/radar/radar_frame.h): a night of
 * reports as one R60ABD1 sends them, fed to the parser and decoder in
 * reads of 64 bytes (what a 115200-baud line delivers between two polls is
 * more), then the same stream with noise bytes and a corrupt frame now and
 * then. One radar sends about 3 frames/s; the figure says how many radars'
 * worth one core could parse. Prints figures; never fails on them. */
#include "bench_util.h"
#include "radar_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FRAMES 200000

static uint8_t *make_stream(bool noisy, size_t *len, size_t *good)
{
    static const uint8_t reports[][3] = {{0x80, 0x03, 7}, {0x85, 0x02, 64}, {0x81, 0x02, 15},
                                         {0x80, 0x01, 1}, {0x80, 0x02, 1},  {0x84, 0x01, 1},
                                         {0x84, 0x02, 1}, {0x81, 0x01, 1},  {0x80, 0x03, 12}};
    size_t cap = (size_t)FRAMES * 20;
    uint8_t *buf = malloc(cap);
    if (!buf)
        abort();
    size_t n = 0;
    *good = 0;
    uint32_t x = 12345;
    for (size_t i = 0; i < FRAMES; i++) {
        const uint8_t *r = reports[i % (sizeof reports / sizeof reports[0])];
        if (noisy) {
            x = x * 1103515245u + 12345u;
            size_t nn = (x >> 16) % 4;
            for (size_t k = 0; k < nn; k++)
                buf[n++] = (uint8_t)(x >> (8 + k));
        }
        size_t fl = radar_frame_build(buf + n, cap - n, r[0], r[1], &r[2], 1);
        if (noisy && i % 50 == 0)
            buf[n + fl - 3] ^= 1; /* a bad checksum now and then */
        else
            (*good)++;
        n += fl;
    }
    *len = n;
    return buf;
}

static void run(const char *what, bool noisy)
{
    size_t len, good;
    uint8_t *buf = make_stream(noisy, &len, &good);
    struct radar_parser *p = radar_parser_new();
    struct radar_frame f;
    size_t frames = 0, metrics = 0;
    int rounds = 10;
    double t0 = now_s();
    for (int r = 0; r < rounds; r++) {
        for (size_t off = 0; off < len;) {
            size_t n = len - off < 64 ? len - off : 64;
            const uint8_t *b = buf + off;
            off += n;
            bool got = false;
            while (n > 0 || got) {
                size_t k = radar_parser_feed(p, b, n, &f, &got);
                b += k;
                n -= k;
                if (got) {
                    struct radar_update u;
                    frames++;
                    metrics += radar_decode(&f, &u) == RADAR_DEC_METRIC;
                }
            }
        }
    }
    double dt = now_s() - t0;
    const struct radar_parser_stats *st = radar_parser_stats(p);
    printf("%-34s %9zu frames %6.1f MB  %6.3f s  %10.0f frames/s  %6.1f MB/s  "
           "(%zu metrics, %llu rejected)\n",
           what, frames, (double)len * rounds / 1e6, dt, (double)frames / dt,
           (double)len * rounds / 1e6 / dt, metrics,
           (unsigned long long)(st->rejected[RADAR_REJ_CHECKSUM] + st->rejected[RADAR_REJ_TAIL] +
                                st->rejected[RADAR_REJ_LENGTH]));
    if (frames != good * (size_t)rounds)
        printf("  (expected %zu frames)\n", good * (size_t)rounds);
    radar_parser_free(p);
    free(buf);
}

int main(void)
{
    run("clean stream, 64-byte reads", false);
    run("noise + 2% bad checksums", true);
    return 0;
}
