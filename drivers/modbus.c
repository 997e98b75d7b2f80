/* Modbus RTU and TCP driver (libmodbus).
 *
 * One bus context is one libmodbus context: a serial line with every slave
 * on it, or one TCP connection to a meter or an RTU-over-TCP gateway. The
 * scheduler owns the bus, so requests on a line never overlap (RS-485 is
 * half-duplex and libmodbus contexts are not thread-safe).
 *
 * A poll sends the device's coalesced requests (regmap.h) in order and stops
 * at the first failure: a silent slave costs one response timeout per poll,
 * not one per request. After a timeout or a garbled frame the line is
 * flushed, so the next slave does not read the tail of a late answer. */
#include "driver.h"
#include "err.h"
#include "log.h"
#include "mbcrc.h"
#include "drv_modbus.h"
#include "regmap.h"
#include "util.h"

#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mb_bus {
    modbus_t *ctx;
    const struct bus_cfg *cfg;
    bool serial;
    int64_t last_end_ms; /* when the previous transaction finished (turnaround) */
};

struct mb_dev {
    struct regmap_plan plan;
};

static int mb_prepare(const struct bus_cfg *bus, const struct device_cfg *dev, void **dev_ctx)
{
    const struct profile *p = dev->prof;
    /* RTU: 0 is broadcast (nobody answers); 248..255 are reserved by the
     * spec but used by real meters, e.g. 0xFE "any address" on SenseAir S8 */
    int64_t slave_max = 255;
    int64_t slave_min = bus->type == BUS_MODBUS_RTU ? 1 : 0;
    if (dev->slave < slave_min || dev->slave > slave_max) {
        cfg_report(dev->node, "slave",
                   "key 'slave': %lld is out of range for a %s bus (%lld..%lld)",
                   (long long)dev->slave, bus->type == BUS_MODBUS_RTU ? "Modbus RTU" : "Modbus TCP",
                   (long long)slave_min, (long long)slave_max);
        return CH_ECONFIG;
    }
    struct mb_dev *d = ch_xcalloc(1, sizeof *d);
    int rc = regmap_plan_build((const struct reg_def *)p->regs.items, p->regs.n,
                               (unsigned)p->max_gap, (unsigned)p->max_registers, &d->plan);
    if (rc != 0) {
        cfg_report(p->node, "registers",
                   "key 'registers': profile '%s' cannot be read in requests "
                   "of at most %lld registers",
                   p->id, (long long)p->max_registers);
        free(d);
        return CH_ECONFIG;
    }
    *dev_ctx = d;
    return 0;
}

static void mb_release(void *dev_ctx)
{
    struct mb_dev *d = dev_ctx;
    if (!d)
        return;
    regmap_plan_free(&d->plan);
    free(d);
}

static void set_timeout(modbus_t *ctx, int64_t ms)
{
    modbus_set_response_timeout(ctx, (uint32_t)(ms / 1000), (uint32_t)((ms % 1000) * 1000));
}

static int mb_open(const struct bus_cfg *bus, void **bus_ctx)
{
    modbus_t *ctx;
    char port[16];
    if (bus->type == BUS_MODBUS_RTU) {
        ctx = modbus_new_rtu(bus->device, (int)bus->baud, (char)bus->parity, (int)bus->data_bits,
                             (int)bus->stop_bits);
    } else {
        snprintf(port, sizeof port, "%lld", (long long)bus->port);
        ctx = modbus_new_tcp_pi(bus->host, port);
    }
    if (!ctx) {
        int e = errno ? errno : EINVAL;
        LOGE("modbus", bus->id, "cannot create context: %s", modbus_strerror(e));
        return -e;
    }
    set_timeout(ctx, bus->timeout_ms);
    /* between two bytes of one frame: generous for USB-RS485 adapters */
    modbus_set_byte_timeout(ctx, 0, 100000);
    if (modbus_connect(ctx) != 0) {
        int e = errno ? errno : EIO;
        LOGW("modbus", bus->id, "cannot open %s: %s",
             bus->type == BUS_MODBUS_RTU ? bus->device : bus->host, modbus_strerror(e));
        modbus_free(ctx);
        return -e;
    }
    struct mb_bus *b = ch_xcalloc(1, sizeof *b);
    b->ctx = ctx;
    b->cfg = bus;
    b->serial = bus->type == BUS_MODBUS_RTU;
    *bus_ctx = b;
    LOGI("modbus", bus->id, "opened %s%s%s", b->serial ? bus->device : bus->host,
         b->serial ? "" : ":", b->serial ? "" : port);
    return 0;
}

static void mb_close(void *bus_ctx)
{
    struct mb_bus *b = bus_ctx;
    if (!b)
        return;
    modbus_close(b->ctx);
    modbus_free(b->ctx);
    free(b);
}

/* Maps libmodbus's errno after a failed request to a carehub error. */
static int map_errno(int e)
{
    if (e == ETIMEDOUT)
        return CH_ETIMEOUT;
    if (e >= MODBUS_ENOBASE + MODBUS_EXCEPTION_ILLEGAL_FUNCTION &&
        e < MODBUS_ENOBASE + MODBUS_EXCEPTION_MAX)
        return CH_EEXCEPTION;
    if (e == EMBBADCRC || e == EMBBADDATA || e == EMBBADEXC || e == EMBUNKEXC || e == EMBMDATA ||
        e == EMBBADSLAVE)
        return CH_EPROTO;
    if (e == ECONNRESET || e == EPIPE || e == EBADF || e == ENOTCONN || e == EIO ||
        e == ECONNREFUSED)
        return -e;
    return CH_EPROTO;
}

/* A read for a slave address libmodbus refuses (248..255: reserved by the
 * spec, yet 0xFE is the SenseAir S8's "any sensor" address). The request goes
 * out through modbus_send_raw_request(); libmodbus still frames the answer,
 * but its RTU slave filter skips the CRC check for an address it does not
 * expect, so the answer is checked here. */
static int raw_read(struct mb_bus *b, int slave, const struct regmap_req *rq, uint16_t *words)
{
    uint8_t req[6] = {(uint8_t)slave,
                      (uint8_t)rq->fc,
                      (uint8_t)(rq->start >> 8),
                      (uint8_t)(rq->start & 0xFF),
                      (uint8_t)(rq->count >> 8),
                      (uint8_t)(rq->count & 0xFF)};
    if (modbus_send_raw_request(b->ctx, req, (int)sizeof req) < 0)
        return map_errno(errno);
    uint8_t rsp[MODBUS_MAX_ADU_LENGTH] = {0};
    int n = modbus_receive_confirmation(b->ctx, rsp);
    if (n < 0)
        return map_errno(errno);
    /* n == 0: libmodbus framed the reply but skipped its checks */
    return drv_modbus_parse_read_reply(rsp, n > 0 ? (size_t)n : sizeof rsp, b->serial, slave, rq,
                                       words);
}

int drv_modbus_parse_read_reply(const uint8_t *adu, size_t n, bool rtu, int slave,
                                const struct regmap_req *rq, uint16_t *words)
{
    size_t hl = rtu ? 1 : 7;
    if (n < hl + 2 || adu[hl - 1] != slave)
        return CH_EPROTO;
    bool exc = (adu[hl] & 0x80) != 0;
    size_t bytes = exc ? 0 : adu[hl + 1];
    size_t len = hl + 2 + bytes + (rtu ? 2 : 0); /* exception: code instead of count */
    if (len > n || (rtu && !mb_crc_ok(adu, len)))
        return CH_EPROTO;
    if (exc)
        return (adu[hl] & 0x7F) == rq->fc ? CH_EEXCEPTION : CH_EPROTO;
    if (adu[hl] != rq->fc)
        return CH_EPROTO;
    bool bits = rq->fc == 1 || rq->fc == 2;
    size_t want = bits ? (rq->count + 7u) / 8u : rq->count * 2u;
    if (bytes != want)
        return CH_EPROTO;
    const uint8_t *d = adu + hl + 2;
    for (size_t i = 0; i < rq->count; i++)
        words[i] = (uint16_t)(bits ? (d[i / 8] >> (i % 8)) & 1 : (d[2 * i] << 8) | d[2 * i + 1]);
    return 0;
}

static int do_request(struct mb_bus *b, int slave, const struct regmap_req *rq, uint16_t *words)
{
    /* RS-485 turnaround: some meters need a quiet line between transactions */
    if (b->serial && b->cfg->turnaround_ms > 0) {
        int64_t wait = b->last_end_ms + b->cfg->turnaround_ms - ch_mono_ms();
        ch_sleep_ms(wait);
    }
    int rc;
    if (slave > 247) {
        rc = raw_read(b, slave, rq, words);
        b->last_end_ms = ch_mono_ms();
        return rc;
    }
    uint8_t bits[REGMAP_MAX_BITS];
    switch (rq->fc) {
    case 1:
        rc = modbus_read_bits(b->ctx, rq->start, rq->count, bits);
        break;
    case 2:
        rc = modbus_read_input_bits(b->ctx, rq->start, rq->count, bits);
        break;
    case 3:
        rc = modbus_read_registers(b->ctx, rq->start, rq->count, words);
        break;
    case 4:
        rc = modbus_read_input_registers(b->ctx, rq->start, rq->count, words);
        break;
    default:
        return CH_EINVAL;
    }
    int e = errno;
    b->last_end_ms = ch_mono_ms();
    if (rc < 0)
        return map_errno(e);
    if (rc != rq->count)
        return CH_EPROTO;
    if (rq->fc == 1 || rq->fc == 2)
        for (int i = 0; i < rc; i++)
            words[i] = bits[i] ? 1 : 0;
    return 0;
}

static int mb_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    struct mb_bus *b = bus_ctx;
    struct mb_dev *d = dev_ctx;
    const struct profile *p = dev->prof;
    if (dev->slave <= 247 && modbus_set_slave(b->ctx, (int)dev->slave) != 0)
        return CH_EINVAL;

    /* one buffer per request; at most 125 words (or 2000 bits) each */
    size_t total = 0;
    for (size_t i = 0; i < d->plan.n_reqs; i++)
        total += d->plan.reqs[i].count;
    uint16_t *buf = ch_xcalloc(total, sizeof *buf);
    size_t *base = ch_xcalloc(d->plan.n_reqs, sizeof *base);

    int rc = 0;
    size_t off = 0;
    out->ts_ms = ch_now_ms();
    for (size_t i = 0; i < d->plan.n_reqs; i++) {
        base[i] = off;
        stats->requests++;
        rc = do_request(b, (int)dev->slave, &d->plan.reqs[i], buf + off);
        if (rc != 0) {
            const struct regmap_req *rq = &d->plan.reqs[i];
            LOGD("modbus", dev->id, "read fc%d %u+%u from slave %lld failed: %s", rq->fc, rq->start,
                 rq->count, (long long)dev->slave, ch_strerror(rc));
            if (rc == CH_ETIMEOUT || rc == CH_EPROTO)
                modbus_flush(b->ctx);
            goto done;
        }
        stats->registers += d->plan.reqs[i].count;
        off += d->plan.reqs[i].count;
    }

    out->metrics = ch_xcalloc(p->regs.n, sizeof *out->metrics);
    out->n_metrics = 0;
    out->quality = CH_Q_GOOD;
    for (size_t i = 0; i < p->regs.n; i++) {
        const struct reg_def *r = PROFILE_REG(p, i);
        const struct regmap_loc *loc = &d->plan.locs[i];
        double v;
        if (regmap_decode(r, buf + base[loc->req] + loc->offset, &v) != 0) {
            LOGW("modbus", dev->id, "metric %s at fc%lld %lld: not a finite number, skipped",
                 r->metric, (long long)r->fc, (long long)r->address);
            out->quality = CH_Q_UNCERTAIN;
            continue;
        }
        struct ch_metric *m = &out->metrics[out->n_metrics++];
        ch_strlcpy(m->name, r->metric, sizeof m->name);
        ch_strlcpy(m->unit, r->unit ? r->unit : "", sizeof m->unit);
        m->value = v;
    }
    if (out->n_metrics == 0) {
        free(out->metrics);
        out->metrics = NULL;
        rc = CH_EPROTO;
    }
done:
    free(buf);
    free(base);
    return rc;
}

static int mb_write_coil(void *bus_ctx, int64_t slave, int64_t coil, bool on)
{
    struct mb_bus *b = bus_ctx;
    if (slave < 0 || slave > 247 || coil < 0 || coil > 65535 ||
        modbus_set_slave(b->ctx, (int)slave) != 0)
        return CH_EINVAL;
    if (b->serial && b->cfg->turnaround_ms > 0)
        ch_sleep_ms(b->last_end_ms + b->cfg->turnaround_ms - ch_mono_ms());
    int rc = modbus_write_bit(b->ctx, (int)coil, on ? 1 : 0);
    int e = errno;
    b->last_end_ms = ch_mono_ms();
    if (rc == 1)
        return 0;
    rc = rc < 0 ? map_errno(e) : CH_EPROTO;
    if (rc == CH_ETIMEOUT || rc == CH_EPROTO)
        modbus_flush(b->ctx);
    return rc;
}

static const int mb_bus_types[] = {BUS_MODBUS_RTU, BUS_MODBUS_TCP, -1};

const struct driver drv_modbus = {
    .name = "modbus",
    .bus_types = mb_bus_types,
    .prepare = mb_prepare,
    .release = mb_release,
    .open = mb_open,
    .poll = mb_poll,
    .close = mb_close,
    .write_coil = mb_write_coil,
};
