#include "sim_frame.h"

#include "mbcrc.h"
#include "util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Twice the largest frame: a whole frame always fits behind a partial one. */
#define FRAMER_CAP (2 * SIM_RTU_MAX_ADU)

struct sim_rtu_framer {
    uint8_t buf[FRAMER_CAP];
    size_t len;
    int64_t silence_ms;
    int64_t last_rx_ms; /* arrival of the newest buffered byte */
    struct sim_rtu_stats st;
};

int sim_frame_pdu_len(const uint8_t *pdu, size_t n)
{
    if (n < 1)
        return 0;
    switch (pdu[0]) {
    case 0x01: /* read coils */
    case 0x02: /* read discrete inputs */
    case 0x03: /* read holding registers */
    case 0x04: /* read input registers */
    case 0x05: /* write single coil */
    case 0x06: /* write single register */
        return 5;
    case 0x0F: /* write multiple coils: fc, addr, qty, byte count, data */
    case 0x10: /* write multiple registers */
        return n < 6 ? 0 : 6 + pdu[5];
    default:
        return -1;
    }
}

int sim_frame_mbap_len(const uint8_t *buf, size_t n)
{
    if (n < 6)
        return 0;
    unsigned proto = (unsigned)buf[2] << 8 | buf[3];
    unsigned len = (unsigned)buf[4] << 8 | buf[5]; /* unit id + PDU */
    if (proto != 0 || len < 2 || len > 1 + 253)
        return -1;
    return 6 + (int)len;
}

struct sim_rtu_framer *sim_rtu_framer_new(int64_t silence_ms)
{
    struct sim_rtu_framer *f = ch_xcalloc(1, sizeof *f);
    f->silence_ms = silence_ms;
    return f;
}

void sim_rtu_framer_free(struct sim_rtu_framer *f)
{
    free(f);
}

size_t sim_rtu_framer_space(const struct sim_rtu_framer *f)
{
    return FRAMER_CAP - f->len;
}

void sim_rtu_framer_feed(struct sim_rtu_framer *f, const uint8_t *data, size_t n, int64_t now_ms)
{
    if (n > FRAMER_CAP - f->len)
        n = FRAMER_CAP - f->len; /* caller broke the contract; keep memory safe */
    memcpy(f->buf + f->len, data, n);
    f->len += n;
    if (n)
        f->last_rx_ms = now_ms;
}

static void drop_front(struct sim_rtu_framer *f, size_t n)
{
    memmove(f->buf, f->buf + n, f->len - n);
    f->len -= n;
}

static size_t take(struct sim_rtu_framer *f, uint8_t *out, size_t n)
{
    memcpy(out, f->buf, n);
    drop_front(f, n);
    f->st.frames++;
    return n;
}

/* Length of a complete request with a known function code and a good CRC
 * at offset off, or 0. */
static size_t frame_at(const struct sim_rtu_framer *f, size_t off)
{
    if (f->len - off < 4)
        return 0;
    int pdu = sim_frame_pdu_len(f->buf + off + 1, f->len - off - 1);
    size_t need = pdu > 0 ? 1 + (size_t)pdu + 2 : 0;
    return need && off + need <= f->len && mb_crc_ok(f->buf + off, need) ? need : 0;
}

/* Drops the bytes before the first complete, valid frame behind the start
 * of the buffer; false if there is none. */
static bool skip_to_frame(struct sim_rtu_framer *f)
{
    for (size_t off = 1; off + 4 <= f->len; off++) {
        if (frame_at(f, off)) {
            drop_front(f, off);
            f->st.dropped += off;
            return true;
        }
    }
    return false;
}

size_t sim_rtu_framer_next(struct sim_rtu_framer *f, uint8_t *out, int64_t now_ms)
{
    while (f->len > 0) {
        size_t n = frame_at(f, 0);
        if (n)
            return take(f, out, n);
        /* A full buffer cannot wait for more bytes: judge it as if silent. */
        bool silent = now_ms - f->last_rx_ms >= f->silence_ms || f->len == FRAMER_CAP;
        int pdu = f->len >= 2 ? sim_frame_pdu_len(f->buf + 1, f->len - 1) : 0;
        size_t need = pdu > 0 ? 1 + (size_t)pdu + 2 : 0;
        if (need && f->len >= need) {
            f->st.bad_crc++; /* complete but corrupt, or not a frame at all */
        } else if (!silent) {
            /* Incomplete, or its end unknown: wait, unless a whole frame is
             * already there behind it (garbage in front of a request). */
            if (skip_to_frame(f))
                continue;
            return 0;
        } else if (pdu < 0 && f->len >= 4 && f->len <= SIM_RTU_MAX_ADU &&
                   mb_crc_ok(f->buf, f->len)) {
            /* Unknown function: the silence says where it ends. */
            return take(f, out, f->len);
        }
        drop_front(f, 1);
        f->st.dropped++;
    }
    return 0;
}

int64_t sim_rtu_framer_deadline(const struct sim_rtu_framer *f)
{
    return f->len ? f->last_rx_ms + f->silence_ms : -1;
}

const struct sim_rtu_stats *sim_rtu_framer_stats(const struct sim_rtu_framer *f)
{
    return &f->st;
}
