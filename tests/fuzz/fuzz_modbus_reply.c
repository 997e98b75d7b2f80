/* Modbus read replies as the driver checks them: never a read past the
 * buffer, and an accepted reply always fills exactly the requested words.
 * Bytes 0..3 pick transport, function code and count; the rest is the ADU.
 * TCP inputs also go through drv_modbus_check_tcp_adu() (issue 11) against
 * a read or a single write, with the frame's own transaction id or another
 * (bit 2 of byte 0): an accepted frame must satisfy every MBAP rule, a
 * refused one must name its field. */
#include "drv_modbus.h"
#include "err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned be16(const uint8_t *p)
{
    return (unsigned)(p[0] << 8 | p[1]);
}

static void check_tcp(const uint8_t *adu, size_t n, const uint8_t *data, int unit,
                      const struct regmap_req *rq)
{
    /* a read as planned, or (function code byte odd) a single write */
    uint8_t req[5] = {(uint8_t)rq->fc, 0, 0, (uint8_t)(rq->count >> 8),
                      (uint8_t)(rq->count & 0xFF)};
    if (data[1] & 0x80)
        req[0] = (uint8_t)(5 + (data[1] & 1));
    uint16_t tid = (uint16_t)((n >= 2 ? be16(adu) : 0) ^ (data[0] & 4 ? 1u : 0u));
    struct mb_fault_info why = {MB_FAULT_NONE, 0, 0, 0};
    int rc = drv_modbus_check_tcp_adu(adu, n, tid, unit, req, sizeof req, &why);
    char text[96];
    if (strlen(drv_modbus_fault_format(&why, text, sizeof text)) >= sizeof text)
        abort();
    if (rc == CH_EPROTO) {
        if (why.fault == MB_FAULT_NONE || why.fault == MB_FAULT_EXCEPTION)
            abort();
        return;
    }
    if (rc != 0 && rc != CH_EEXCEPTION)
        abort();
    /* accepted, as a reply or as an exception: every MBAP rule holds */
    if (n < MB_MBAP_LEN || drv_modbus_check_mbap(adu, tid, unit, NULL) != 0)
        abort();
    unsigned len = be16(adu + 4);
    if (be16(adu) != tid || be16(adu + 2) != 0 || adu[6] != unit || n != 6 + (size_t)len ||
        len < MB_MBAP_LENGTH_MIN || len > MB_MBAP_LENGTH_MAX)
        abort();
    const uint8_t *pdu = adu + MB_MBAP_LEN;
    if (rc == CH_EEXCEPTION) {
        if (pdu[0] != (req[0] | 0x80) || len != 3 || why.fault != MB_FAULT_EXCEPTION)
            abort();
        return;
    }
    if (pdu[0] != req[0])
        abort();
    if (req[0] >= 5) {
        if (len != 6 || memcmp(pdu, req, sizeof req) != 0)
            abort();
        return;
    }
    unsigned want = req[0] <= 2 ? (rq->count + 7u) / 8u : rq->count * 2u;
    if (pdu[1] != want || len != 3 + want)
        abort();
}

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
    if (!rtu)
        check_tcp(adu, n, data, slave, &rq);
    free(adu);
    return 0;
}
