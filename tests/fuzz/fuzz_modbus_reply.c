/* Modbus read replies as the driver checks them: never a read past the
 * buffer, and an accepted reply always fills exactly the requested words.
 * Bytes 0..3 pick transport, function code and count; the rest is the ADU. */
#include "drv_modbus.h"
#include "err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    bool rtu = data[0] & 1;
    struct regmap_req rq = {.fc = 1 + data[1] % 4, .start = 0};
    unsigned max = rq.fc <= 2 ? REGMAP_MAX_BITS : REGMAP_MAX_REGS;
    rq.count = (uint16_t)(1 + (((unsigned)data[2] << 8) | data[3]) % max);
    /* a copy of exactly the remaining bytes, so ASan sees any over-read */
    size_t n = size - 4;
    uint8_t *adu = malloc(n ? n : 1);
    memcpy(adu, data + 4, n);
    uint16_t words[REGMAP_MAX_BITS];
    size_t unit_at = rtu ? 0 : 6; /* reply from the slave it names, or a wrong one */
    int slave = n > unit_at ? adu[unit_at] ^ (data[0] & 2) : 1;
    int rc = drv_modbus_parse_read_reply(adu, n, rtu, slave, &rq, words);
    if (rc != 0 && rc != CH_EEXCEPTION && rc != CH_EPROTO)
        abort();
    if (rc == 0 && (rq.fc == 1 || rq.fc == 2))
        for (unsigned i = 0; i < rq.count; i++)
            if (words[i] > 1)
                abort();
    free(adu);
    return 0;
}
