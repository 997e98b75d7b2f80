/* Driver for 60 GHz sleep radars on a serial line (MicRadar R60ABD1 family,
 * bus type radar-uart, profile protocol mr60-radar).
 *
 * Unlike a Modbus meter, the radar talks on its own: it reports body
 * movement about once a second, heart and breathing rate every few seconds,
 * and presence, motion, bed state and sleep stage when they change. So the
 * bus context keeps the radar's latest state, and a poll drains whatever
 * arrived since the previous poll through the frame parser
 * (radar_frame.h) and returns that state as one reading. States are held
 * (a bed exit between two polls is still in_bed = 0 at the next one);
 * rates and movement, which the radar refreshes all the time, are left out
 * of the reading once they are older than VALUE_TTL, so a value from before
 * the resident left is not reported as current.
 *
 * States are only reported on change, so after (re)opening the port the
 * driver asks for them (query frames, answered with the report's command
 * word | 0x80), and again every QUERY_PERIOD_MS, so a change report lost to
 * line noise is corrected within seconds.
 *
 * One radar per serial line: the bus carries exactly one device, checked in
 * prepare(). The only wait is in the first poll after opening, up to the
 * bus timeout, for the radar's first report (so `care-edge --once` shows
 * values and the poller does not count a failure at every start); every
 * later poll only reads what is already buffered. */
#include "driver.h"
#include "err.h"
#include "log.h"
#include "radar_frame.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define SILENCE_MIN_MS  3000  /* floor of "nothing arrived" (3 poll intervals) */
#define VALUE_TTL_MS    10000 /* floor of how long a rate or movement stays current */
#define QUERY_PERIOD_MS 10000 /* state queries repeated: a lost change is back this soon */
#define SETTLE_MS       30    /* first poll: quiet time that ends the first burst */
#define READ_BUDGET     65536 /* bytes drained per poll at most (115200 baud ~ 5 s) */
#define WARN_PERIOD_MS  60000 /* rejected frames are logged at most this often */

struct rd_bus {
    int fd;
    const struct bus_cfg *cfg;
    struct radar_parser *parser;
    /* the radar's state */
    double value[RADAR_M_COUNT];
    bool known[RADAR_M_COUNT];
    int64_t updated_ms[RADAR_M_COUNT]; /* monotonic */
    bool polled;                       /* a poll happened since open */
    int64_t opened_ms, last_rx_ms, last_frame_ms, next_query_ms;
    /* counters for the periodic warning */
    uint64_t invalid, warned_rejects, warned_invalid;
    int64_t next_warn_ms;
};

struct rd_dev {
    const struct bus_cfg *bus;
    const struct device_cfg *dev;
    size_t n;
    int metric[RADAR_M_COUNT]; /* profile metric i -> enum radar_metric */
};

/* A radar line's own state (attach): the one radar it carries, to refuse a
 * second. prepare and release of one poller run on one thread; a reload's
 * new poller has its own. */
struct rd_line {
    const struct device_cfg *radar;
};

static void *rd_attach(const struct bus_cfg *bus, void **shared)
{
    (void)bus;
    (void)shared;
    return ch_xcalloc(1, sizeof(struct rd_line));
}

static void rd_detach(void *state)
{
    free(state);
}

static int rd_prepare(void *state, const struct bus_cfg *bus, const struct device_cfg *dev,
                      void **dev_ctx)
{
    struct rd_line *line = state;
    const struct profile *p = dev->prof;
    if (p->protocol != PROTO_MR60_RADAR) {
        cfg_report(dev->node, "profile",
                   "key 'profile': '%s' is not a radar profile (protocol: mr60-radar); bus '%s' "
                   "is a radar-uart line",
                   p->id, bus->id);
        return CH_ECONFIG;
    }
    struct rd_dev *d = ch_xcalloc(1, sizeof *d);
    d->bus = bus;
    d->dev = dev;
    int errors = 0;
    for (size_t i = 0; i < p->metrics.n; i++) {
        const struct metric_def *m = PROFILE_METRIC(p, i);
        int k = radar_metric_find(m->metric);
        if (k < 0) {
            cfg_report(m->node, "metric",
                       "key 'metric': an mr60-radar does not report '%s' (it reports presence "
                       "motion movement breath_state rr hr in_bed sleep_stage)",
                       m->metric);
            errors++;
            continue;
        }
        d->metric[d->n++] = k;
    }
    if (line->radar && line->radar != dev) {
        cfg_report(dev->node, "bus",
                   "key 'bus': bus '%s' already carries radar '%s'; a radar-uart line has "
                   "one radar",
                   bus->id, line->radar->id);
        errors++;
    } else if (!errors) {
        line->radar = dev;
    }
    if (errors) {
        free(d);
        return CH_ECONFIG;
    }
    if (bus->baud != 115200)
        LOGW("radar", dev->id, "bus '%s' runs at %lld baud; R60ABD1-family radars speak 115200",
             bus->id, (long long)bus->baud);
    *dev_ctx = d;
    return 0;
}

static void rd_release(void *state, void *dev_ctx)
{
    struct rd_line *line = state;
    struct rd_dev *d = dev_ctx;
    if (!d)
        return;
    if (line->radar == d->dev)
        line->radar = NULL;
    free(d);
}

static bool baud_speed(int64_t baud, speed_t *out)
{
    static const struct {
        int64_t baud;
        speed_t speed;
    } rates[] = {{1200, B1200},     {2400, B2400},     {4800, B4800},    {9600, B9600},
                 {19200, B19200},   {38400, B38400},   {57600, B57600},  {115200, B115200},
                 {230400, B230400}, {460800, B460800}, {921600, B921600}};
    for (size_t i = 0; i < CH_ARRAY_LEN(rates); i++) {
        if (rates[i].baud == baud) {
            *out = rates[i].speed;
            return true;
        }
    }
    return false;
}

/* Raw mode, the bus's speed and framing, reads that never wait. */
static int configure(int fd, const struct bus_cfg *bus)
{
    struct termios t;
    speed_t sp;
    if (!baud_speed(bus->baud, &sp))
        return -EINVAL;
    if (tcgetattr(fd, &t) != 0)
        return -errno;
    cfmakeraw(&t);
    t.c_cflag &= (tcflag_t) ~(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
    t.c_cflag |= CLOCAL | CREAD | (bus->data_bits == 7 ? CS7 : CS8);
    if (bus->parity == 'E' || bus->parity == 'O')
        t.c_cflag |= PARENB | (bus->parity == 'O' ? PARODD : 0);
    if (bus->stop_bits == 2)
        t.c_cflag |= CSTOPB;
    t.c_iflag &= (tcflag_t) ~(IXON | IXOFF | IXANY);
    /* VMIN 1 with O_NONBLOCK: no data is EAGAIN and 0 means hang-up (with
     * VMIN 0 Linux returns 0 for both) */
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (cfsetispeed(&t, sp) != 0 || cfsetospeed(&t, sp) != 0 || tcsetattr(fd, TCSANOW, &t) != 0)
        return -errno;
    tcflush(fd, TCIFLUSH); /* what the line held before us is not news */
    return 0;
}

static int rd_open(void *state, const struct bus_cfg *bus, void **bus_ctx)
{
    (void)state;
    int fd = open(bus->device, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        LOGW("radar", bus->id, "cannot open %s: %s", bus->device, strerror(e));
        return -e;
    }
    int rc = configure(fd, bus);
    if (rc != 0) {
        LOGW("radar", bus->id, "cannot configure %s at %lld baud: %s", bus->device,
             (long long)bus->baud, strerror(-rc));
        close(fd);
        return rc;
    }
    struct rd_bus *b = ch_xcalloc(1, sizeof *b);
    b->fd = fd;
    b->cfg = bus;
    b->parser = radar_parser_new();
    b->opened_ms = b->last_rx_ms = b->last_frame_ms = ch_mono_ms();
    b->next_query_ms = b->opened_ms;
    b->next_warn_ms = b->opened_ms;
    *bus_ctx = b;
    LOGI("radar", bus->id, "opened %s at %lld baud", bus->device, (long long)bus->baud);
    return 0;
}

static void rd_close(void *bus_ctx)
{
    struct rd_bus *b = bus_ctx;
    if (!b)
        return;
    close(b->fd);
    radar_parser_free(b->parser);
    free(b);
}

/* Asks for every state the radar only reports on change. Non-blocking: a
 * full output buffer skips this round. Returns 0 or -errno. */
static int send_queries(struct rd_bus *b, struct drv_poll_stats *stats)
{
    static const uint8_t q[][2] = {{RADAR_CTL_PRESENCE, 0x81},
                                   {RADAR_CTL_PRESENCE, 0x82},
                                   {RADAR_CTL_BREATH, 0x81},
                                   {RADAR_CTL_SLEEP, 0x81},
                                   {RADAR_CTL_SLEEP, 0x82}};
    uint8_t buf[CH_ARRAY_LEN(q) * (RADAR_FRAME_OVERHEAD + 1)];
    size_t n = 0;
    const uint8_t data = RADAR_QUERY_DATA;
    for (size_t i = 0; i < CH_ARRAY_LEN(q); i++)
        n += radar_frame_build(buf + n, sizeof buf - n, q[i][0], q[i][1], &data, 1);
    ssize_t w = write(b->fd, buf, n);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
        return -errno;
    if (w > 0)
        stats->requests += CH_ARRAY_LEN(q);
    return 0;
}

static void apply(struct rd_bus *b, const struct radar_frame *f, int64_t now, bool *metric)
{
    struct radar_update u;
    b->last_frame_ms = now;
    switch (radar_decode(f, &u)) {
    case RADAR_DEC_METRIC:
        b->known[u.metric] = u.known;
        b->value[u.metric] = u.value;
        b->updated_ms[u.metric] = now;
        *metric = true;
        break;
    case RADAR_DEC_INVALID:
        b->invalid++;
        break;
    case RADAR_DEC_NONE:
        break;
    }
}

/* Reads what is buffered on the line and applies every whole frame.
 * Returns 0, or -errno when the port is gone. *metric is set when a frame
 * carried a metric. */
static int drain(struct rd_bus *b, struct drv_poll_stats *stats, bool *metric)
{
    uint8_t buf[1024];
    size_t total = 0;
    while (total < READ_BUDGET) {
        ssize_t r = read(b->fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -errno;
        }
        if (r == 0)
            return -EIO; /* hang-up: the adapter or the other end went away */
        int64_t now = ch_mono_ms();
        b->last_rx_ms = now;
        total += (size_t)r;
        const uint8_t *p = buf;
        size_t n = (size_t)r;
        struct radar_frame f;
        bool got = false;
        while (n > 0 || got) {
            size_t k = radar_parser_feed(b->parser, p, n, &f, &got);
            p += k;
            n -= k;
            if (got) {
                stats->registers++;
                apply(b, &f, now, metric);
            }
        }
    }
    return 0;
}

/* First poll after opening: the radar's first burst (and the answers to
 * the queries) until a metric has come and the line has been quiet for
 * SETTLE_MS, or the bus timeout. */
static int wait_first(struct rd_bus *b, struct drv_poll_stats *stats)
{
    int64_t deadline = ch_mono_ms() + b->cfg->timeout_ms;
    bool metric = false;
    for (;;) {
        int64_t now = ch_mono_ms();
        int64_t until =
            metric && b->last_rx_ms + SETTLE_MS < deadline ? b->last_rx_ms + SETTLE_MS : deadline;
        if (now >= until)
            return 0;
        struct pollfd pfd = {.fd = b->fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(until - now));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0 && (pfd.revents & (POLLERR | POLLNVAL)))
            return -EIO;
        if (r > 0) {
            int rc = drain(b, stats, &metric);
            if (rc != 0)
                return rc;
        }
    }
}

static void warn_rejects(struct rd_bus *b, const struct device_cfg *dev, int64_t now)
{
    const struct radar_parser_stats *st = radar_parser_stats(b->parser);
    uint64_t rej = 0;
    for (int i = 0; i < RADAR_REJ_COUNT; i++)
        rej += st->rejected[i];
    if ((rej == b->warned_rejects && b->invalid == b->warned_invalid) || now < b->next_warn_ms)
        return;
    LOGW("radar", dev->id,
         "%llu frames dropped on %s (checksum %llu, tail %llu, length %llu), %llu reports out of "
         "range, %llu noise bytes; %llu good frames",
         (unsigned long long)(rej - b->warned_rejects), b->cfg->device,
         (unsigned long long)st->rejected[RADAR_REJ_CHECKSUM],
         (unsigned long long)st->rejected[RADAR_REJ_TAIL],
         (unsigned long long)st->rejected[RADAR_REJ_LENGTH],
         (unsigned long long)(b->invalid - b->warned_invalid), (unsigned long long)st->garbage,
         (unsigned long long)st->frames);
    b->warned_rejects = rej;
    b->warned_invalid = b->invalid;
    b->next_warn_ms = now + WARN_PERIOD_MS;
}

static bool is_value_metric(int m)
{
    return m == RADAR_M_HR || m == RADAR_M_RR || m == RADAR_M_MOVEMENT;
}

static int rd_poll(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx,
                   struct ch_reading *out, struct drv_poll_stats *stats)
{
    struct rd_bus *b = bus_ctx;
    struct rd_dev *d = dev_ctx;
    const struct profile *p = dev->prof;
    int rc;
    if (ch_mono_ms() >= b->next_query_ms) {
        if ((rc = send_queries(b, stats)) != 0)
            return rc;
        b->next_query_ms = ch_mono_ms() + QUERY_PERIOD_MS;
    }
    bool metric = false;
    rc = b->polled ? drain(b, stats, &metric) : wait_first(b, stats);
    b->polled = true;
    if (rc != 0)
        return rc;

    int64_t now = ch_mono_ms();
    int64_t silence = 3 * dev->interval_ms > SILENCE_MIN_MS ? 3 * dev->interval_ms : SILENCE_MIN_MS;
    int64_t ttl = 5 * dev->interval_ms > VALUE_TTL_MS ? 5 * dev->interval_ms : VALUE_TTL_MS;
    warn_rejects(b, dev, now);
    if (now - b->last_rx_ms > silence) {
        b->next_query_ms = now; /* states may have changed meanwhile: ask again once it is back */
        return CH_ETIMEOUT;
    }
    if (now - b->last_frame_ms > silence)
        return CH_EPROTO; /* bytes, but no frame: wrong speed or a different device */

    out->metrics = ch_xcalloc(d->n ? d->n : 1, sizeof *out->metrics);
    out->n_metrics = 0;
    for (size_t i = 0; i < d->n; i++) {
        int m = d->metric[i];
        if (!b->known[m] || (is_value_metric(m) && now - b->updated_ms[m] > ttl))
            continue;
        const struct metric_def *md = PROFILE_METRIC(p, i);
        struct ch_metric *cm = &out->metrics[out->n_metrics++];
        ch_strlcpy(cm->name, md->metric, sizeof cm->name);
        ch_strlcpy(cm->unit, md->unit ? md->unit : "", sizeof cm->unit);
        cm->value = b->value[m];
    }
    if (out->n_metrics == 0) {
        /* alive (heartbeats, waveforms) but nothing the profile wants yet */
        free(out->metrics);
        out->metrics = NULL;
        return CH_ETIMEOUT;
    }
    out->ts_ms = ch_now_ms();
    out->quality = CH_Q_GOOD;
    return 0;
}

static const struct cfg_key rd_keys[] = {DRIVER_SERIAL_KEYS("115200"), CFG_END};

static const struct driver_bus_type rd_bus_types[] = {
    {BUS_RADAR_UART, "radar-uart", rd_keys, DRV_ADDR_NONE}, {0}};

static const struct driver_protocol rd_protocols[] = {
    {PROTO_MR60_RADAR, "mr60-radar", driver_check_metric_list, NULL}, {0}};

const struct driver drv_radar = {
    .name = "radar",
    .bus_types = rd_bus_types,
    .protocols = rd_protocols,
    .attach = rd_attach,
    .detach = rd_detach,
    .prepare = rd_prepare,
    .release = rd_release,
    .open = rd_open,
    .poll = rd_poll,
    .close = rd_close,
    .write_coil = NULL,
};
