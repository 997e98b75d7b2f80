/* care-sim's RTU request framer on arbitrary line noise: every frame it hands
 * out has a valid CRC and, for a function code it knows, exactly that code's
 * length. Byte 0 sets the
 * chunk size, so frames split across reads are exercised. */
#include "mbcrc.h"
#include "sim_frame.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = 1 + data[0] % 32;
    struct sim_rtu_framer *f = sim_rtu_framer_new(5);
    int64_t now = 0;
    uint8_t out[SIM_RTU_MAX_ADU];
    for (size_t off = 1; off < size;) {
        size_t room = sim_rtu_framer_space(f);
        size_t n = size - off < chunk ? size - off : chunk;
        if (n > room)
            n = room;
        sim_rtu_framer_feed(f, data + off, n, now);
        off += n;
        now += (data[off - 1] & 0x80) ? 10 : 1; /* sometimes a silence */
        size_t len;
        while ((len = sim_rtu_framer_next(f, out, now)) > 0) {
            if (len < 4 || len > SIM_RTU_MAX_ADU || !mb_crc_ok(out, len))
                abort();
            /* a known function code has exactly its length; an unknown one is
             * handed out whole (CRC-checked) for an "illegal function" reply */
            int want = sim_frame_pdu_len(out + 1, len - 3);
            if (want >= 0 && want != (int)(len - 3))
                abort();
        }
    }
    sim_rtu_framer_free(f);
    return 0;
}
