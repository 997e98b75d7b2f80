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
 * flushed, so the next slave does not read the tail of a late answer.
 *
 * Modbus TCP: libmodbus opens and closes the connection, but the driver runs
 * each transaction itself on that socket (tcp_transact), because libmodbus
 * 3.1.6 accepts replies with a wrong unit id, a protocol id like 7 and any
 * MBAP length (drv_modbus.h). A reply is framed by its MBAP header, which is
 * checked (transaction id, protocol id, length, unit id) before the rest is
 * read, then the PDU must fill exactly the announced length and answer the
 * request. A refused frame leaves the byte stream out of step (the rest of
 * it, or a late reply, may still be on its way), so the driver reconnects:
 * a flush only drops what has already arrived. */
#include "driver.h"
#include "err.h"
#include "log.h"
#include "mbcrc.h"
#include "drv_modbus.h"
#include "regmap.h"
#include "util.h"

#include <errno.h>
#include <modbus.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Longest silence between two bytes of one frame: generous for USB-RS485
 * adapters (RTU) and for a TCP reply split over segments. */
#define MB_BYTE_TIMEOUT_MS 100

struct mb_bus {
    modbus_t *ctx;
    const struct bus_cfg *cfg;
    bool serial;
    uint16_t tid;        /* TCP: transaction id of the latest request */
    int64_t last_end_ms; /* when the previous transaction finished (turnaround) */
};

struct mb_dev {
    struct regmap_plan plan;
};

static int mb_prepare(void *state, const struct bus_cfg *bus, const struct device_cfg *dev,
                      void **dev_ctx)
{
    (void)state;
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

static void mb_release(void *state, void *dev_ctx)
{
    (void)state;
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

static int mb_open(void *state, const struct bus_cfg *bus, void **bus_ctx)
{
    (void)state;
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
    modbus_set_byte_timeout(ctx, 0, MB_BYTE_TIMEOUT_MS * 1000);
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
static void fault(struct mb_fault_info *why, enum mb_fault f, unsigned got, unsigned lo,
                  unsigned hi);

static int raw_read(struct mb_bus *b, int slave, const struct regmap_req *rq, uint16_t *words,
                    struct mb_fault_info *why)
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
    int rc = drv_modbus_parse_read_reply(rsp, n > 0 ? (size_t)n : sizeof rsp, b->serial, slave, rq,
                                         words);
    if (rc == CH_EEXCEPTION)
        fault(why, MB_FAULT_EXCEPTION, rsp[2], 0, 0);
    return rc;
}

/* Fills words[0..rq->count) from the data bytes d of a checked read reply. */
static void decode_words(const uint8_t *d, const struct regmap_req *rq, uint16_t *words)
{
    bool bits = rq->fc == 1 || rq->fc == 2;
    for (size_t i = 0; i < rq->count; i++)
        words[i] = (uint16_t)(bits ? (d[i / 8] >> (i % 8)) & 1 : (d[2 * i] << 8) | d[2 * i + 1]);
}

/* The PDU of a read request (function code, start, quantity). */
static void read_pdu(const struct regmap_req *rq, uint8_t pdu[5])
{
    pdu[0] = (uint8_t)rq->fc;
    pdu[1] = (uint8_t)(rq->start >> 8);
    pdu[2] = (uint8_t)(rq->start & 0xFF);
    pdu[3] = (uint8_t)(rq->count >> 8);
    pdu[4] = (uint8_t)(rq->count & 0xFF);
}

int drv_modbus_parse_read_reply(const uint8_t *adu, size_t n, bool rtu, int slave,
                                const struct regmap_req *rq, uint16_t *words)
{
    if (!rtu) {
        uint8_t req[5];
        read_pdu(rq, req);
        uint16_t tid = (uint16_t)(n >= 2 ? adu[0] << 8 | adu[1] : 0);
        int rc = drv_modbus_check_tcp_adu(adu, n, tid, slave, req, sizeof req, NULL);
        if (rc == 0)
            decode_words(adu + MB_MBAP_LEN + 2, rq, words);
        return rc;
    }
    if (n < 3 || adu[0] != slave)
        return CH_EPROTO;
    bool exc = (adu[1] & 0x80) != 0;
    size_t bytes = exc ? 0 : adu[2];
    size_t len = 3 + bytes + 2; /* exception: code instead of count */
    if (len > n || !mb_crc_ok(adu, len))
        return CH_EPROTO;
    if (exc)
        return (adu[1] & 0x7F) == rq->fc ? CH_EEXCEPTION : CH_EPROTO;
    if (adu[1] != rq->fc)
        return CH_EPROTO;
    bool bits = rq->fc == 1 || rq->fc == 2;
    size_t want = bits ? (rq->count + 7u) / 8u : rq->count * 2u;
    if (bytes != want)
        return CH_EPROTO;
    decode_words(adu + 3, rq, words);
    return 0;
}

static void fault(struct mb_fault_info *why, enum mb_fault f, unsigned got, unsigned lo,
                  unsigned hi)
{
    if (why)
        *why = (struct mb_fault_info){.fault = f, .got = got, .want_lo = lo, .want_hi = hi};
}

const char *drv_modbus_fault_name(enum mb_fault f)
{
    switch (f) {
    case MB_FAULT_NONE:
        return "none";
    case MB_FAULT_SHORT:
        return "frame size";
    case MB_FAULT_TID:
        return "MBAP transaction id";
    case MB_FAULT_PROTOCOL:
        return "MBAP protocol id";
    case MB_FAULT_LENGTH:
        return "MBAP length";
    case MB_FAULT_UNIT:
        return "unit id";
    case MB_FAULT_FUNCTION:
        return "function code";
    case MB_FAULT_COUNT:
        return "byte count";
    case MB_FAULT_ECHO:
        return "write echo";
    case MB_FAULT_EXCEPTION:
        return "exception code";
    case MB_FAULT_CRC:
        return "CRC";
    }
    return "?";
}

const char *drv_modbus_exception_name(unsigned code)
{
    switch (code) {
    case 1:
        return "illegal function";
    case 2:
        return "illegal data address";
    case 3:
        return "illegal data value";
    case 4:
        return "server device failure";
    case 5:
        return "acknowledge";
    case 6:
        return "server device busy";
    case 8:
        return "memory parity error";
    case 0x0A:
        return "gateway path unavailable";
    case 0x0B:
        return "gateway target device failed to respond";
    }
    return "unknown exception";
}

char *drv_modbus_fault_format(const struct mb_fault_info *why, char *buf, size_t size)
{
    const char *name = drv_modbus_fault_name(why->fault);
    if (why->fault == MB_FAULT_EXCEPTION)
        snprintf(buf, size, "%s %u", name, why->got);
    else if (why->fault == MB_FAULT_FUNCTION)
        snprintf(buf, size, "%s 0x%02X, expected 0x%02X", name, why->got, why->want_lo);
    else if (why->fault == MB_FAULT_ECHO)
        snprintf(buf, size, "%s address %u value 0x%04X, expected address %u value 0x%04X", name,
                 why->got >> 16, why->got & 0xFFFF, why->want_lo >> 16, why->want_lo & 0xFFFF);
    else if (why->want_lo != why->want_hi)
        snprintf(buf, size, "%s %u, expected %u..%u", name, why->got, why->want_lo, why->want_hi);
    else
        snprintf(buf, size, "%s %u, expected %u", name, why->got, why->want_lo);
    return buf;
}

int drv_modbus_check_mbap(const uint8_t *hdr, uint16_t tid, int unit, struct mb_fault_info *why)
{
    unsigned t = (unsigned)(hdr[0] << 8 | hdr[1]);
    unsigned proto = (unsigned)(hdr[2] << 8 | hdr[3]);
    unsigned len = (unsigned)(hdr[4] << 8 | hdr[5]);
    if (t != tid)
        fault(why, MB_FAULT_TID, t, tid, tid);
    else if (proto != 0)
        fault(why, MB_FAULT_PROTOCOL, proto, 0, 0);
    else if (len < MB_MBAP_LENGTH_MIN || len > MB_MBAP_LENGTH_MAX)
        fault(why, MB_FAULT_LENGTH, len, MB_MBAP_LENGTH_MIN, MB_MBAP_LENGTH_MAX);
    else if (hdr[6] != unit)
        fault(why, MB_FAULT_UNIT, hdr[6], (unsigned)unit, (unsigned)unit);
    else
        return 0;
    return CH_EPROTO;
}

int drv_modbus_check_tcp_adu(const uint8_t *adu, size_t n, uint16_t tid, int unit,
                             const uint8_t *req, size_t req_len, struct mb_fault_info *why)
{
    if (req_len != 5 || req[0] < 1 || req[0] > 6)
        return CH_EINVAL; /* only reads and single writes are sent */
    if (n < MB_MBAP_LEN) {
        fault(why, MB_FAULT_SHORT, (unsigned)n, MB_MBAP_LEN, MB_MBAP_LEN);
        return CH_EPROTO;
    }
    int rc = drv_modbus_check_mbap(adu, tid, unit, why);
    if (rc != 0)
        return rc;
    unsigned len = (unsigned)(adu[4] << 8 | adu[5]);
    if (n < 6 + (size_t)len) {
        fault(why, MB_FAULT_SHORT, (unsigned)n, 6 + len, 6 + len);
        return CH_EPROTO;
    }
    if (n > 6 + (size_t)len) { /* bytes beyond the announced frame */
        fault(why, MB_FAULT_LENGTH, len, (unsigned)(n - 6), (unsigned)(n - 6));
        return CH_EPROTO;
    }
    const uint8_t *pdu = adu + MB_MBAP_LEN;
    size_t pdu_len = len - 1; /* 2..253 */
    unsigned fc = pdu[0];
    if (fc & 0x80) {
        if ((fc & 0x7F) != req[0])
            fault(why, MB_FAULT_FUNCTION, fc, req[0] | 0x80u, req[0] | 0x80u);
        else if (pdu_len != 2)
            fault(why, MB_FAULT_LENGTH, len, 3, 3);
        else {
            fault(why, MB_FAULT_EXCEPTION, pdu[1], 0, 0);
            return CH_EEXCEPTION;
        }
        return CH_EPROTO;
    }
    if (fc != req[0]) {
        fault(why, MB_FAULT_FUNCTION, fc, req[0], req[0]);
        return CH_EPROTO;
    }
    if (fc == 5 || fc == 6) {
        if (pdu_len != 5) {
            fault(why, MB_FAULT_LENGTH, len, 6, 6);
            return CH_EPROTO;
        }
        if (memcmp(pdu, req, 5) != 0) {
            unsigned got =
                (unsigned)(pdu[1] << 8 | pdu[2]) << 16 | (unsigned)(pdu[3] << 8 | pdu[4]);
            unsigned want =
                (unsigned)(req[1] << 8 | req[2]) << 16 | (unsigned)(req[3] << 8 | req[4]);
            fault(why, MB_FAULT_ECHO, got, want, want);
            return CH_EPROTO;
        }
        return 0;
    }
    unsigned qty = (unsigned)(req[3] << 8 | req[4]);
    unsigned want = fc <= 2 ? (qty + 7u) / 8u : qty * 2u;
    if (pdu[1] != want) {
        fault(why, MB_FAULT_COUNT, pdu[1], want, want);
        return CH_EPROTO;
    }
    if (pdu_len != 2 + (size_t)want) {
        fault(why, MB_FAULT_LENGTH, len, 3 + want, 3 + want);
        return CH_EPROTO;
    }
    return 0;
}

/* Waits until fd is ready for events or the monotonic deadline passes.
 * Returns 1 (ready), 0 (deadline) or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - ch_mono_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (rc >= 0)
            return rc > 0;
        if (errno != EINTR)
            return -errno;
    }
}

static int send_all(int fd, const uint8_t *p, size_t n, int64_t wait_ms)
{
    int64_t deadline = ch_mono_ms() + wait_ms;
    for (size_t off = 0; off < n;) {
        ssize_t r = send(fd, p + off, n - off, MSG_NOSIGNAL);
        if (r >= 0) {
            off += (size_t)r;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc <= 0)
            return rc < 0 ? rc : CH_ETIMEOUT;
    }
    return 0;
}

/* Reads n bytes into p: the first within wait_ms, each further one within
 * the byte timeout of the one before (as libmodbus does). *got counts what
 * arrived. Returns 0, CH_ETIMEOUT or -errno (ECONNRESET: the peer closed). */
static int recv_all(int fd, uint8_t *p, size_t n, int64_t wait_ms, size_t *got)
{
    int64_t deadline = ch_mono_ms() + wait_ms;
    for (*got = 0; *got < n;) {
        int rc = wait_fd(fd, POLLIN, deadline);
        if (rc <= 0)
            return rc < 0 ? rc : CH_ETIMEOUT;
        ssize_t r = recv(fd, p + *got, n - *got, 0);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -errno;
        }
        *got += (size_t)r;
        deadline = ch_mono_ms() + MB_BYTE_TIMEOUT_MS;
    }
    return 0;
}

/* One Modbus TCP transaction on the socket libmodbus connected: sends pdu
 * (pdu_len <= 5 bytes) to unit under the next transaction id and reads the
 * reply framed by its MBAP header into adu (MB_TCP_ADU_MAX bytes), checking
 * the header before trusting its length. Returns 0 with *n, CH_ETIMEOUT
 * (nothing arrived), CH_EPROTO with *why (a refused header or a frame
 * shorter than announced: the stream is out of step), or -errno for a
 * broken connection. The PDU is the caller's to check. */
static int tcp_transact(struct mb_bus *b, int unit, const uint8_t *pdu, size_t pdu_len,
                        uint8_t *adu, size_t *n, struct mb_fault_info *why)
{
    int fd = modbus_get_socket(b->ctx);
    if (pdu_len > 5)
        return CH_EINVAL;
    if (fd < 0)
        return -ENOTCONN;
    uint16_t tid = ++b->tid;
    uint8_t req[MB_MBAP_LEN + 5] = {(uint8_t)(tid >> 8),    (uint8_t)(tid & 0xFF), 0, 0, 0,
                                    (uint8_t)(pdu_len + 1), (uint8_t)unit};
    memcpy(req + MB_MBAP_LEN, pdu, pdu_len);
    int rc = send_all(fd, req, MB_MBAP_LEN + pdu_len, b->cfg->timeout_ms);
    if (rc != 0)
        return rc;
    size_t got;
    rc = recv_all(fd, adu, MB_MBAP_LEN, b->cfg->timeout_ms, &got);
    if (rc == 0)
        rc = drv_modbus_check_mbap(adu, tid, unit, why);
    else if (rc == CH_ETIMEOUT && got > 0) {
        fault(why, MB_FAULT_SHORT, (unsigned)got, MB_MBAP_LEN, MB_MBAP_LEN);
        rc = CH_EPROTO;
    }
    if (rc != 0)
        return rc;
    size_t rest = (size_t)(adu[4] << 8 | adu[5]) - 1; /* after the unit id */
    rc = recv_all(fd, adu + MB_MBAP_LEN, rest, MB_BYTE_TIMEOUT_MS, &got);
    if (rc == CH_ETIMEOUT) {
        fault(why, MB_FAULT_SHORT, (unsigned)(MB_MBAP_LEN + got), (unsigned)(MB_MBAP_LEN + rest),
              (unsigned)(MB_MBAP_LEN + rest));
        return CH_EPROTO;
    }
    if (rc != 0)
        return rc;
    *n = MB_MBAP_LEN + rest;
    return 0;
}

static int tcp_read(struct mb_bus *b, int unit, const struct regmap_req *rq, uint16_t *words,
                    struct mb_fault_info *why)
{
    uint8_t req[5], adu[MB_TCP_ADU_MAX];
    size_t n = 0;
    read_pdu(rq, req);
    int rc = tcp_transact(b, unit, req, sizeof req, adu, &n, why);
    if (rc == 0)
        rc = drv_modbus_check_tcp_adu(adu, n, b->tid, unit, req, sizeof req, why);
    if (rc == 0)
        decode_words(adu + MB_MBAP_LEN + 2, rq, words);
    return rc;
}

/* After a refused TCP frame: a new connection, so that the rest of that
 * frame (or a late one) cannot be taken for the next reply. Returns 0, or
 * -ENOTCONN if the peer cannot be reached again (the scheduler then reopens
 * the bus with its back-off). */
static int tcp_resync(struct mb_bus *b)
{
    modbus_close(b->ctx);
    if (modbus_connect(b->ctx) == 0)
        return 0;
    int e = errno ? errno : EIO;
    LOGW("modbus", b->cfg->id, "cannot reconnect to %s: %s", b->cfg->host, modbus_strerror(e));
    return -ENOTCONN;
}

static int do_request(struct mb_bus *b, int slave, const struct regmap_req *rq, uint16_t *words,
                      struct mb_fault_info *why)
{
    if (!b->serial)
        return tcp_read(b, slave, rq, words, why);
    /* RS-485 turnaround: some meters need a quiet line between transactions */
    if (b->cfg->turnaround_ms > 0) {
        int64_t wait = b->last_end_ms + b->cfg->turnaround_ms - ch_mono_ms();
        ch_sleep_ms(wait);
    }
    int rc;
    if (slave > 247) {
        rc = raw_read(b, slave, rq, words, why);
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
    if (rc < 0) {
        if (e > MODBUS_ENOBASE && e < MODBUS_ENOBASE + MODBUS_EXCEPTION_MAX)
            fault(why, MB_FAULT_EXCEPTION, (unsigned)(e - MODBUS_ENOBASE), 0, 0);
        else if (e == EMBBADCRC)
            fault(why, MB_FAULT_CRC, 0, 0, 0);
        return map_errno(e);
    }
    if (rc != rq->count)
        return CH_EPROTO;
    if (rq->fc == 1 || rq->fc == 2)
        for (int i = 0; i < rc; i++)
            words[i] = bits[i] ? 1 : 0;
    return 0;
}

/* Says in stats why request rq failed with rc (and *why): an exception
 * with its code and name, no answer, a CRC error or a bad reply, and the
 * registers asked for. */
static void describe_failure(struct drv_poll_stats *st, int rc, const struct mb_fault_info *why,
                             const struct regmap_req *rq)
{
    char range[48], what[96];
    snprintf(range, sizeof range, "fc %d, %s %u..%u", rq->fc, rq->fc <= 2 ? "bits" : "registers",
             rq->start, rq->start + rq->count - 1);
    if (rc == CH_EEXCEPTION) {
        unsigned code = why->fault == MB_FAULT_EXCEPTION ? why->got : 0;
        st->fail = DRV_FAIL_EXCEPTION;
        snprintf(st->detail, sizeof st->detail, "exception %02X %s (%s)", code,
                 drv_modbus_exception_name(code), range);
    } else if (rc == CH_ETIMEOUT) {
        st->fail = DRV_FAIL_TIMEOUT;
        snprintf(st->detail, sizeof st->detail, "no answer (%s)", range);
    } else if (why->fault == MB_FAULT_CRC) {
        st->fail = DRV_FAIL_CRC;
        snprintf(st->detail, sizeof st->detail, "CRC error (%s)", range);
    } else if (rc == CH_EPROTO) {
        st->fail = DRV_FAIL_REPLY;
        if (why->fault != MB_FAULT_NONE)
            snprintf(st->detail, sizeof st->detail, "bad reply: %s (%s)",
                     drv_modbus_fault_format(why, what, sizeof what), range);
        else
            snprintf(st->detail, sizeof st->detail, "bad reply (%s)", range);
    }
}

static int mb_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    struct mb_bus *b = bus_ctx;
    struct mb_dev *d = dev_ctx;
    const struct profile *p = dev->prof;
    if (b->serial && dev->slave <= 247 && modbus_set_slave(b->ctx, (int)dev->slave) != 0)
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
        struct mb_fault_info why = {MB_FAULT_NONE, 0, 0, 0};
        rc = do_request(b, (int)dev->slave, &d->plan.reqs[i], buf + off, &why);
        if (rc != 0) {
            const struct regmap_req *rq = &d->plan.reqs[i];
            describe_failure(stats, rc, &why, rq);
            if (rc == CH_EPROTO && !b->serial && why.fault != MB_FAULT_NONE) {
                char what[96];
                LOGW("modbus", dev->id,
                     "rejected reply to read fc%d %u+%u from unit %lld on %s: %s", rq->fc,
                     rq->start, rq->count, (long long)dev->slave, b->cfg->id,
                     drv_modbus_fault_format(&why, what, sizeof what));
                int lrc = tcp_resync(b);
                if (lrc != 0)
                    rc = lrc;
                goto done;
            }
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

/* Writes one coil over TCP; the reply must be the request's echo. */
static int tcp_write_coil(struct mb_bus *b, int slave, int coil, bool on)
{
    uint8_t req[5] = {5, (uint8_t)(coil >> 8), (uint8_t)(coil & 0xFF), on ? 0xFF : 0, 0};
    uint8_t adu[MB_TCP_ADU_MAX];
    size_t n = 0;
    struct mb_fault_info why = {MB_FAULT_NONE, 0, 0, 0};
    int rc = tcp_transact(b, slave, req, sizeof req, adu, &n, &why);
    if (rc == 0)
        rc = drv_modbus_check_tcp_adu(adu, n, b->tid, slave, req, sizeof req, &why);
    if (rc == CH_EPROTO && why.fault != MB_FAULT_NONE) {
        char what[96];
        LOGW("modbus", b->cfg->id, "rejected reply to write coil %d of unit %d: %s", coil, slave,
             drv_modbus_fault_format(&why, what, sizeof what));
        int lrc = tcp_resync(b);
        return lrc != 0 ? lrc : rc;
    }
    if (rc == CH_ETIMEOUT)
        modbus_flush(b->ctx);
    return rc;
}

static int mb_write_coil(void *bus_ctx, int64_t slave, int64_t coil, bool on)
{
    struct mb_bus *b = bus_ctx;
    if (slave < 0 || slave > 247 || coil < 0 || coil > 65535)
        return CH_EINVAL;
    if (!b->serial)
        return tcp_write_coil(b, (int)slave, (int)coil, on);
    if (modbus_set_slave(b->ctx, (int)slave) != 0)
        return CH_EINVAL;
    if (b->cfg->turnaround_ms > 0)
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

#define B(k) offsetof(struct bus_cfg, k)
/* clang-format off */
static const struct cfg_key mb_rtu_keys[] = {
    DRIVER_SERIAL_KEYS("9600"),
    {.key = "turnaround", .type = CFG_DURATION, .offset = B(turnaround_ms), .def = "0ms", .min = 0, .max = 10000},
    CFG_END,
};
static const struct cfg_key mb_tcp_keys[] = {
    {.key = "host",       .type = CFG_STR,      .offset = B(host), .required = true},
    {.key = "port",       .type = CFG_INT,      .offset = B(port), .def = "502", .min = 1, .max = 65535},
    {.key = "timeout",    .type = CFG_DURATION, .offset = B(timeout_ms), .def = "1s", .min = 10, .max = 60000},
    {.key = "turnaround", .type = CFG_DURATION, .offset = B(turnaround_ms), .def = "0ms", .min = 0, .max = 10000},
    CFG_END,
};
/* clang-format on */
#undef B

static const struct driver_bus_type mb_bus_types[] = {
    {BUS_MODBUS_RTU, "modbus-rtu", mb_rtu_keys, DRV_ADDR_SLAVE},
    {BUS_MODBUS_TCP, "modbus-tcp", mb_tcp_keys, DRV_ADDR_SLAVE},
    {0}};

/* A Modbus profile reads registers (their overlap is checked with the
 * profile's other keys, edge/site.c). */
static int mb_check_profile(struct profile *p)
{
    if (p->regs.n)
        return 0;
    cfg_report(p->node, "registers",
               "key 'registers': a Modbus profile needs at least one register");
    return 1;
}

static const struct driver_protocol mb_protocols[] = {
    {PROTO_MODBUS, "modbus", mb_check_profile, NULL}, {0}};

const struct driver drv_modbus = {
    .name = "modbus",
    .bus_types = mb_bus_types,
    .protocols = mb_protocols,
    .prepare = mb_prepare,
    .release = mb_release,
    .open = mb_open,
    .poll = mb_poll,
    .close = mb_close,
    .write_coil = mb_write_coil,
};
