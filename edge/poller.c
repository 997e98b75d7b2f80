#include "poller.h"
#include "driver.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bus;

struct dev {
    const struct device_cfg *cfg;
    struct bus *bus;
    void *drv_ctx;
    struct ch_reading once; /* poller_once: the first reading pushed (guarded by poller.lock) */
    bool once_got;
    int64_t next_due;           /* monotonic ms */
    unsigned fails;             /* consecutive */
    struct poller_dev_stats st; /* guarded by poller.lock */
};

/* An output driven by alarms (annunciator coil). Level semantics: the bus
 * thread writes `want` until the device confirms it, retries with back-off,
 * and asserts it again now and then in case the relay module restarted. */
struct output {
    const struct annunciator_cfg *cfg;
    bool want;  /* guarded by poller.lock */
    bool known; /* the device is known to be at `applied` */
    bool applied;
    int64_t next_try; /* monotonic ms */
    unsigned fails;
    struct poller_out_stats st; /* guarded by poller.lock */
};

#define OUTPUT_REASSERT_MS 60000
#define PUSH_QUEUE_MAX     4096 /* readings waiting for a bus thread, per bus */

struct bus {
    struct poller *p;
    const struct bus_cfg *cfg;
    const struct driver *drv;
    void *state;          /* the driver's, for the configuration's lifetime (attach) */
    void *ctx;            /* open bus, or NULL */
    struct drv_emit sink; /* where a pushing driver hands its readings */
    /* Readings a pushing driver handed over, for the bus thread to emit:
     * the spool, the rules and an alarm's fsync never run on the driver's
     * (Paho's) thread. Guarded by poller.wake_lock. */
    struct queued {
        size_t dev;
        struct ch_reading r;
    } * q;
    size_t qn, qcap;
    int64_t next_drop_log;
    unsigned open_fails;
    int64_t next_open;
    size_t n_devs;
    struct dev **devs;
    size_t n_outs;
    struct output **outs;
    pthread_t thread;
    bool started;
};

struct poller {
    const struct site_config *cfg;
    poller_emit_fn emit;
    void *arg;
    size_t n_devs;
    struct dev *devs;    /* in configuration order (enabled only) */
    struct dev **by_cfg; /* configuration index -> device; NULL if disabled */
    bool once;           /* poller_once: pushed readings are kept for it */
    size_t n_buses;
    struct bus *buses;
    struct {
        const struct driver *drv;
        void *shared; /* what the driver's buses share (attach) */
    } * shared;       /* one per driver in use, at most n_buses */
    size_t n_shared;
    size_t n_outs;
    struct output *outs;  /* as cfg->annunciators */
    pthread_mutex_t lock; /* stats, outputs' want */
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    atomic_bool stop;
};

static int64_t backoff_delay(int64_t interval, unsigned fails, int64_t cap)
{
    int64_t d = interval;
    for (unsigned i = 1; i < fails && d < cap; i++)
        d *= 2;
    return d < cap ? d : (interval > cap ? interval : cap);
}

static void pushed(void *ctx, const struct device_cfg *dc, struct ch_reading *r);
static void pushed_rejected(void *ctx, const struct device_cfg *dc);

/* The slot of what drv's buses share in this poller. */
static void **shared_slot(struct poller *p, const struct driver *drv)
{
    size_t i = 0;
    while (i < p->n_shared && p->shared[i].drv != drv)
        i++;
    if (i == p->n_shared)
        p->shared[p->n_shared++].drv = drv;
    return &p->shared[i].shared;
}

int poller_create(const struct site_config *cfg, poller_emit_fn emit, void *arg,
                  struct poller **out)
{
    struct poller *p = ch_xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->emit = emit;
    p->arg = arg;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->wake_lock, NULL);
    ch_cond_init_monotonic(&p->wake);

    p->devs = ch_xcalloc(cfg->devices.n, sizeof *p->devs);
    p->buses = ch_xcalloc(cfg->buses.n, sizeof *p->buses);
    p->shared = ch_xcalloc(cfg->buses.n + 1, sizeof *p->shared);
    p->n_buses = cfg->buses.n;
    int rc = 0;
    for (size_t b = 0; b < cfg->buses.n; b++) {
        struct bus *bus = &p->buses[b];
        bus->p = p;
        bus->cfg = SITE_BUS(cfg, b);
        bus->drv = driver_for_bus(bus->cfg->type);
        bus->devs = ch_xcalloc(cfg->devices.n, sizeof *bus->devs);
        bus->sink = (struct drv_emit){.ctx = bus, .reading = pushed, .rejected = pushed_rejected};
        if (!bus->drv) {
            cfg_report(bus->cfg->node, "type", "key 'type': no driver for this bus type");
            rc = CH_ECONFIG;
        } else if (bus->drv->attach) {
            bus->state = bus->drv->attach(bus->cfg, shared_slot(p, bus->drv));
        }
    }
    p->by_cfg = ch_xcalloc(cfg->devices.n + 1, sizeof *p->by_cfg);
    for (size_t i = 0; i < cfg->devices.n; i++) {
        const struct device_cfg *dc = SITE_DEV(cfg, i);
        if (!dc->enabled)
            continue;
        struct bus *bus = NULL;
        for (size_t b = 0; b < p->n_buses; b++)
            if (p->buses[b].cfg == dc->busp)
                bus = &p->buses[b];
        if (!bus || !bus->drv)
            continue;
        struct dev *d = &p->devs[p->n_devs];
        d->cfg = dc;
        d->bus = bus;
        d->st.id = dc->id;
        if (bus->drv->prepare(bus->state, bus->cfg, dc, &d->drv_ctx) != 0) {
            rc = CH_ECONFIG;
            continue;
        }
        p->by_cfg[i] = d;
        p->n_devs++;
        bus->devs[bus->n_devs++] = d;
    }
    for (size_t i = 0; i < p->n_shared && rc == 0; i++)
        if (p->shared[i].drv->check_shared && p->shared[i].drv->check_shared(p->shared[i].shared))
            rc = CH_ECONFIG;
    p->outs = ch_xcalloc(cfg->annunciators.n + 1, sizeof *p->outs);
    for (size_t i = 0; i < cfg->annunciators.n; i++) {
        const struct annunciator_cfg *ac = SITE_ANNUNCIATOR(cfg, i);
        struct output *o = &p->outs[p->n_outs++];
        o->cfg = ac;
        o->st.id = ac->id;
        for (size_t b = 0; b < p->n_buses; b++) {
            struct bus *bus = &p->buses[b];
            if (bus->cfg != ac->busp)
                continue;
            if (bus->drv && !bus->drv->write_coil) {
                cfg_report(ac->node, "bus", "key 'bus': bus '%s' has no outputs", ac->bus);
                rc = CH_ECONFIG;
                break;
            }
            bus->outs = ch_xrealloc(bus->outs, (bus->n_outs + 1) * sizeof *bus->outs);
            bus->outs[bus->n_outs++] = o;
        }
    }
    if (rc != 0) {
        poller_destroy(p);
        return rc;
    }
    *out = p;
    return 0;
}

void poller_destroy(struct poller *p)
{
    if (!p)
        return;
    for (size_t b = 0; b < p->n_buses; b++) { /* no driver thread runs after this */
        struct bus *bus = &p->buses[b];
        if (bus->ctx)
            bus->drv->close(bus->ctx);
        bus->ctx = NULL;
    }
    for (size_t i = 0; i < p->n_devs; i++)
        p->devs[i].bus->drv->release(p->devs[i].bus->state, p->devs[i].drv_ctx);
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->drv && bus->drv->detach)
            bus->drv->detach(bus->state);
        for (size_t i = 0; i < bus->qn; i++) /* pushed, never emitted: not started */
            free(bus->q[i].r.metrics);
        free(bus->q);
        free(bus->devs);
        free(bus->outs);
    }
    for (size_t i = 0; i < p->n_shared; i++)
        if (p->shared[i].drv->release_shared)
            p->shared[i].drv->release_shared(p->shared[i].shared);
    free(p->shared);
    free(p->by_cfg);
    free(p->buses);
    free(p->outs);
    free(p->devs);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->wake_lock);
    pthread_cond_destroy(&p->wake);
    free(p);
}

/* Sleeps until the monotonic time `until`, until stop, or until a pushed
 * reading waits in the bus's queue; returns false on stop. */
static bool sleep_until(struct bus *bus, int64_t until)
{
    struct poller *p = bus->p;
    pthread_mutex_lock(&p->wake_lock);
    while (!atomic_load(&p->stop) && bus->qn == 0) {
        int64_t now = ch_mono_ms();
        if (now >= until)
            break;
        ch_cond_wait_until(&p->wake, &p->wake_lock, until);
    }
    bool running = !atomic_load(&p->stop);
    pthread_mutex_unlock(&p->wake_lock);
    return running;
}

static void fill_ids(struct ch_reading *r, const struct device_cfg *dc)
{
    memset(r, 0, sizeof *r);
    ch_strlcpy(r->device, dc->id, sizeof r->device);
    ch_strlcpy(r->measurement, dc->prof->measurement, sizeof r->measurement);
    ch_strlcpy(r->room, dc->room ? dc->room : "", sizeof r->room);
}

/* The device of a pushing driver's callback. */
static struct dev *pushed_dev(const struct bus *bus, const struct device_cfg *dc)
{
    return bus->p->by_cfg[dc - SITE_DEV(bus->p->cfg, 0)];
}

/* A reading a pushing driver received (on its own thread): a good poll of
 * the device, handed on at once; poller_once keeps the first instead. */
static void pushed(void *ctx, const struct device_cfg *dc, struct ch_reading *r)
{
    struct bus *bus = ctx;
    struct poller *p = bus->p;
    struct dev *d = pushed_dev(bus, dc);
    ch_strlcpy(r->device, dc->id, sizeof r->device);
    ch_strlcpy(r->measurement, dc->prof->measurement, sizeof r->measurement);
    if (!r->room[0])
        ch_strlcpy(r->room, dc->room ? dc->room : "", sizeof r->room);
    pthread_mutex_lock(&p->lock);
    bool back = !d->st.online && d->st.last_err != 0;
    d->st.polls_ok++;
    d->st.requests++; /* one message */
    d->st.online = true;
    d->st.last_err = 0;
    d->st.last_detail[0] = '\0';
    if (p->once) {
        if (!d->once_got)
            d->once = *r;
        else
            free(r->metrics);
        d->once_got = true;
        pthread_mutex_unlock(&p->lock);
        return;
    }
    pthread_mutex_unlock(&p->lock);
    if (back)
        LOGI("poller", dc->id, "online again: heard from after being silent");
    pthread_mutex_lock(&p->wake_lock);
    bool full = bus->qn >= PUSH_QUEUE_MAX, say = false;
    if (!full) {
        if (bus->qn == bus->qcap) {
            bus->qcap = bus->qcap ? 2 * bus->qcap : 16;
            bus->q = ch_xrealloc(bus->q, bus->qcap * sizeof *bus->q);
        }
        bus->q[bus->qn++] = (struct queued){(size_t)(d - p->devs), *r};
        if (bus->qn == 1) /* else the bus thread has not taken the last ones yet */
            pthread_cond_broadcast(&p->wake);
    } else {
        int64_t now = ch_mono_ms();
        say = now >= bus->next_drop_log;
        if (say)
            bus->next_drop_log = now + 60000;
    }
    pthread_mutex_unlock(&p->wake_lock);
    if (full) {
        free(r->metrics);
        pthread_mutex_lock(&p->lock);
        uint64_t n = ++d->st.dropped;
        pthread_mutex_unlock(&p->lock);
        if (say)
            LOGW("poller", dc->id,
                 "reading dropped: %d wait on bus %s, whose thread is behind (%llu dropped)",
                 PUSH_QUEUE_MAX, bus->cfg->id, (unsigned long long)n);
    }
}

/* Hands the readings pushed since the last call to emit, in arrival order
 * (the bus thread, or poller_stop once it has stopped). */
static void emit_queued(struct bus *bus)
{
    struct poller *p = bus->p;
    pthread_mutex_lock(&p->wake_lock);
    struct queued *q = bus->q;
    size_t n = bus->qn;
    bus->q = NULL;
    bus->qn = bus->qcap = 0;
    pthread_mutex_unlock(&p->wake_lock);
    for (size_t i = 0; i < n; i++)
        p->emit(p->arg, q[i].dev, &q[i].r);
    free(q);
}

static void pushed_rejected(void *ctx, const struct device_cfg *dc)
{
    struct bus *bus = ctx;
    pthread_mutex_lock(&bus->p->lock);
    pushed_dev(bus, dc)->st.rejected++;
    pthread_mutex_unlock(&bus->p->lock);
}

/* Opens the bus, and starts a pushing driver's delivery. Returns 0 or the
 * driver's error (the bus is then closed). */
static int open_bus(struct bus *bus)
{
    int rc = bus->drv->open(bus->state, bus->cfg, &bus->ctx);
    if (rc == 0 && bus->drv->start) {
        rc = bus->drv->start(bus->ctx, &bus->sink);
        if (rc != 0)
            bus->drv->close(bus->ctx);
    }
    if (rc != 0)
        bus->ctx = NULL;
    return rc;
}

/* Counts a failed poll by why: the driver's class, else the error's.
 * Locked. */
static void count_failure(struct poller_dev_stats *st, int rc, const struct drv_poll_stats *ps)
{
    enum drv_fail f = ps->fail;
    if (f == DRV_FAIL_NONE)
        f = rc == CH_ETIMEOUT     ? DRV_FAIL_TIMEOUT
            : rc == CH_EEXCEPTION ? DRV_FAIL_EXCEPTION
            : rc == CH_EPROTO     ? DRV_FAIL_REPLY
                                  : DRV_FAIL_NONE;
    st->timeouts += f == DRV_FAIL_TIMEOUT;
    st->exceptions += f == DRV_FAIL_EXCEPTION;
    st->crc_errors += f == DRV_FAIL_CRC;
    st->bad_replies += f == DRV_FAIL_REPLY;
    ch_strlcpy(st->last_detail, ps->detail, sizeof st->last_detail);
}

/* Polls one device and updates its state; returns the driver's result. */
static int poll_device(struct bus *bus, struct dev *d, struct ch_reading *r)
{
    struct poller *p = bus->p;
    struct drv_poll_stats ps = {0};
    fill_ids(r, d->cfg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = bus->drv->poll(bus->ctx, d->cfg, d->drv_ctx, r, &ps);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    if (rc == CH_ENODATA)
        return rc; /* a device that pushes its data had nothing new: neither ok nor failed */
    pthread_mutex_lock(&p->lock);
    d->st.requests += ps.requests;
    d->st.registers += ps.registers;
    unsigned prev_fails = d->fails;
    bool was_offline = !d->st.online && d->st.last_err != 0; /* not merely never polled */
    d->st.last_err = rc;
    if (rc == 0) {
        d->st.polls_ok++;
        d->st.last_latency_ms =
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        d->st.online = true;
        d->st.last_detail[0] = '\0';
        d->fails = 0;
    } else {
        d->st.polls_failed++;
        d->fails++;
        if (d->fails >= POLLER_OFFLINE_AFTER)
            d->st.online = false;
        count_failure(&d->st, rc, &ps);
    }
    pthread_mutex_unlock(&p->lock);

    /* the driver's words when it has them: "exception 02 illegal data
       address (fc 3, registers 100..109)" */
    const char *sep = ps.detail[0] ? ": " : "";
    if (rc == 0 && was_offline)
        LOGI("poller", d->cfg->id, "online again after %u failed poll%s", prev_fails,
             prev_fails == 1 ? "" : "s");
    else if (rc != 0 && d->fails == POLLER_OFFLINE_AFTER)
        LOGW("poller", d->cfg->id, "offline after %u failed polls: %s%s%s (slave %lld on %s)",
             d->fails, ch_strerror(rc), sep, ps.detail, (long long)d->cfg->slave, bus->cfg->id);
    else if (rc != 0 && d->fails == 1)
        LOGW("poller", d->cfg->id, "poll failed: %s%s%s (slave %lld on %s)", ch_strerror(rc), sep,
             ps.detail, (long long)d->cfg->slave, bus->cfg->id);
    else if (rc != 0)
        LOGD("poller", d->cfg->id, "poll failed again (%u): %s%s%s", d->fails, ch_strerror(rc), sep,
             ps.detail);
    return rc;
}

/* The bus cannot be opened: its devices are offline (each logged once, when
 * it goes). */
static void mark_bus_down(struct bus *bus, int err)
{
    struct poller *p = bus->p;
    for (size_t i = 0; i < bus->n_devs; i++) {
        struct dev *d = bus->devs[i];
        pthread_mutex_lock(&p->lock);
        bool was_online = d->st.online;
        d->st.online = false;
        d->st.last_err = err;
        d->st.last_detail[0] = '\0'; /* the bus's error, not a device's */
        pthread_mutex_unlock(&p->lock);
        if (was_online)
            LOGW("poller", d->cfg->id, "offline: bus %s cannot be opened (%s)", bus->cfg->id,
                 ch_strerror(err));
    }
}

/* Writes the outputs of the bus that need it (changed, unconfirmed, or due
 * for re-assertion); returns the monotonic time of the next output work. */
static int64_t service_outputs(struct bus *bus, int64_t now)
{
    struct poller *p = bus->p;
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < bus->n_outs; i++) {
        struct output *o = bus->outs[i];
        pthread_mutex_lock(&p->lock);
        bool want = o->want;
        pthread_mutex_unlock(&p->lock);
        bool due = !o->known || o->applied != want || o->next_try <= now;
        if (!due || (o->fails && o->next_try > now)) {
            if (o->next_try < next)
                next = o->next_try;
            continue;
        }
        int rc = bus->drv->write_coil(bus->ctx, o->cfg->slave, o->cfg->coil, want);
        now = ch_mono_ms();
        pthread_mutex_lock(&p->lock);
        if (rc == 0) {
            bool changed = !o->known || o->applied != want;
            o->known = true;
            o->applied = want;
            o->fails = 0;
            o->next_try = now + OUTPUT_REASSERT_MS;
            o->st.writes_ok++;
            o->st.on = want;
            o->st.last_err = 0;
            pthread_mutex_unlock(&p->lock);
            if (changed)
                LOGI("annunciator", o->cfg->id, "coil %lld of slave %lld on %s %s",
                     (long long)o->cfg->coil, (long long)o->cfg->slave, bus->cfg->id,
                     want ? "ON" : "off");
        } else {
            o->known = false;
            o->fails++;
            o->next_try = now + backoff_delay(1000, o->fails, 30000);
            o->st.writes_failed++;
            o->st.last_err = rc;
            pthread_mutex_unlock(&p->lock);
            if (o->fails == 1)
                LOGW("annunciator", o->cfg->id, "cannot set coil %lld of slave %lld on %s: %s",
                     (long long)o->cfg->coil, (long long)o->cfg->slave, bus->cfg->id,
                     ch_strerror(rc));
            if (driver_err_is_link(rc)) {
                LOGW("poller", bus->cfg->id, "connection lost (%s), reopening", ch_strerror(rc));
                bus->drv->close(bus->ctx);
                bus->ctx = NULL;
                bus->next_open = now + 1000;
                return now;
            }
        }
        if (o->next_try < next)
            next = o->next_try;
    }
    return next;
}

/* A failing device's retry delay is capped by its bus's backoff_max, and
 * lower by its profile's (a call panel, a bed sensor, a gas detector:
 * seconds, not minutes). */
static int64_t backoff_cap(const struct bus *bus, const struct dev *d)
{
    int64_t cap = bus->cfg->backoff_max_ms, own = d->cfg->prof->backoff_max_ms;
    return own > 0 && own < cap ? own : cap;
}

/* Whether every device of the bus but d is failing too: the line or the
 * gateway is down, not one device. */
static bool bus_silent(const struct bus *bus, const struct dev *d)
{
    for (size_t i = 0; i < bus->n_devs; i++)
        if (bus->devs[i] != d && bus->devs[i]->fails == 0)
            return false;
    return true;
}

/* The bus answers again (d did, after every device had failed): the others
 * are tried at their next interval instead of at the end of a back-off
 * grown while the line was down; a device that is really dead fails once
 * more and backs off again (on a bus whose only other device is dead, each
 * recovery of the live one costs the line that one timeout). */
static void bus_back(struct bus *bus, const struct dev *d, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < bus->n_devs; i++) {
        struct dev *e = bus->devs[i];
        if (e == d || e->fails == 0 || e->next_due <= now + e->cfg->interval_ms)
            continue;
        e->next_due = now + e->cfg->interval_ms;
        n++;
    }
    if (n)
        LOGI("poller", bus->cfg->id,
             "answering again (%s): %zu backed-off device%s retried at the next interval",
             d->cfg->id, n, n == 1 ? "" : "s");
}

static void *bus_thread(void *arg)
{
    struct bus *bus = arg;
    struct poller *p = bus->p;
    int64_t now = ch_mono_ms();
    /* spread the first polls over 100 ms so a bus does not start with a burst */
    for (size_t i = 0; i < bus->n_devs; i++)
        bus->devs[i]->next_due = now + (int64_t)(i * 100 / (bus->n_devs ? bus->n_devs : 1));
    bus->next_open = now;

    while (!atomic_load(&p->stop)) {
        emit_queued(bus);
        if (!bus->ctx) {
            if (!sleep_until(bus, bus->next_open))
                break;
            if (ch_mono_ms() < bus->next_open)
                continue; /* woken by a pushed reading */
            int rc = open_bus(bus);
            if (rc != 0) {
                bus->open_fails++;
                mark_bus_down(bus, rc);
                bus->next_open =
                    ch_mono_ms() + backoff_delay(1000, bus->open_fails, bus->cfg->backoff_max_ms);
                continue;
            }
            bus->open_fails = 0;
        }
        int64_t out_next = service_outputs(bus, ch_mono_ms());
        if (!bus->ctx)
            continue;
        struct dev *d = NULL;
        for (size_t i = 0; i < bus->n_devs; i++)
            if (!d || bus->devs[i]->next_due < d->next_due)
                d = bus->devs[i];
        if (!d || out_next < d->next_due) {
            /* an output change wakes the thread (poller_set_output) */
            if (!sleep_until(bus, out_next))
                break;
            continue;
        }
        if (!sleep_until(bus, d->next_due))
            break;
        if (ch_mono_ms() < d->next_due)
            continue; /* woken by a pushed reading */

        struct ch_reading r;
        bool bus_was_down = d->fails > 0 && bus_silent(bus, d);
        int rc = poll_device(bus, d, &r);
        now = ch_mono_ms();
        if (rc == 0 && bus_was_down)
            bus_back(bus, d, now);
        if (rc == 0 || rc == CH_ENODATA) {
            if (rc == 0) {
                p->emit(p->arg, (size_t)(d - p->devs), &r);
            } else {
                free(r.metrics);
                d->fails = 0; /* heard (or nothing to say): it is not failing */
            }
            d->next_due += d->cfg->interval_ms;
            if (d->next_due <= now) /* behind: skip missed beats, keep the grid */
                d->next_due +=
                    ((now - d->next_due) / d->cfg->interval_ms + 1) * d->cfg->interval_ms;
        } else {
            free(r.metrics);
            /* a pushing device's poll only looks at a clock: no line to
               spare, so its silence is looked at every interval */
            d->next_due = bus->drv->start ? now + d->cfg->interval_ms
                                          : now + backoff_delay(d->cfg->interval_ms, d->fails,
                                                                backoff_cap(bus, d));
            if (driver_err_is_link(rc)) {
                LOGW("poller", bus->cfg->id, "connection lost (%s), reopening", ch_strerror(rc));
                bus->drv->close(bus->ctx);
                bus->ctx = NULL;
                bus->next_open = now + 1000;
            }
        }
    }
    return NULL;
}

int poller_start(struct poller *p)
{
    atomic_store(&p->stop, false);
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->n_devs == 0 && bus->n_outs == 0 && !(bus->drv && bus->drv->open_without_devices))
            continue;
        int rc = pthread_create(&bus->thread, NULL, bus_thread, bus);
        if (rc != 0) {
            LOGE("poller", bus->cfg->id, "cannot start thread: %s", strerror(rc));
            poller_stop(p);
            return -rc;
        }
        bus->started = true;
    }
    return 0;
}

void poller_stop(struct poller *p)
{
    pthread_mutex_lock(&p->wake_lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->wake_lock);
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->started)
            pthread_join(bus->thread, NULL);
        bus->started = false;
        /* a pushing driver's thread delivers nothing after this */
        if (bus->ctx)
            bus->drv->close(bus->ctx);
        bus->ctx = NULL;
        emit_queued(bus); /* what it delivered before is not lost */
    }
}

/* How long poller_once waits for a device that pushes or reports on its
 * own: two intervals, at most 10 s. */
static int64_t once_wait_ms(const struct device_cfg *dc)
{
    return dc->interval_ms * 2 < 10000 ? dc->interval_ms * 2 : 10000;
}

/* poller_once's reading of a device whose driver pushes: the first that
 * arrives within once_wait_ms. */
static int once_pushed(struct poller *p, struct dev *d, struct ch_reading *r)
{
    int64_t until = ch_mono_ms() + once_wait_ms(d->cfg);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool got = d->once_got;
        if (got)
            *r = d->once; /* taken: later ones are freed by pushed() */
        d->once.metrics = NULL;
        pthread_mutex_unlock(&p->lock);
        if (got)
            return 0;
        if (ch_mono_ms() >= until)
            break;
        ch_sleep_ms(20);
    }
    memset(r, 0, sizeof *r);
    pthread_mutex_lock(&p->lock);
    snprintf(d->st.last_detail, sizeof d->st.last_detail, "nothing received within %lld ms",
             (long long)once_wait_ms(d->cfg));
    pthread_mutex_unlock(&p->lock);
    return CH_ETIMEOUT;
}

int poller_once(struct poller *p, FILE *out)
{
    int failed = 0;
    fprintf(out, "%-20s %-12s %5s  %-16s %14s  %-8s %s\n", "DEVICE", "BUS", "SLAVE", "METRIC",
            "VALUE", "UNIT", "REQUESTS");
    p->once = true;
    /* buses that only feed what others share (receivers of another make) */
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->n_devs == 0 && bus->drv && bus->drv->open_without_devices && open_bus(bus) != 0)
            LOGW("poller", bus->cfg->id, "cannot open it: --once goes on without it");
    }
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->n_devs == 0)
            continue;
        int orc = open_bus(bus);
        for (size_t i = 0; i < bus->n_devs; i++) {
            struct dev *d = bus->devs[i];
            const struct device_cfg *dc = d->cfg;
            char slave[24] = "-"; /* a device on a network of its own has none */
            if (dc->slave >= 0)
                snprintf(slave, sizeof slave, "%lld", (long long)dc->slave);
            if (orc != 0) {
                fprintf(out, "%-20s %-12s %5s  ERROR: cannot open bus: %s\n", dc->id, bus->cfg->id,
                        slave, ch_strerror(orc));
                failed++;
                continue;
            }
            struct ch_reading r;
            uint64_t requests = 1; /* a pushing device: the message it sent */
            int rc;
            if (bus->drv->start) {
                rc = once_pushed(p, d, &r);
            } else {
                pthread_mutex_lock(&p->lock);
                requests = d->st.requests;
                pthread_mutex_unlock(&p->lock);
                rc = poll_device(bus, d, &r);
                /* a device that reports on its own: wait for news */
                int64_t until = ch_mono_ms() + once_wait_ms(dc);
                while (rc == CH_ENODATA && ch_mono_ms() < until) {
                    free(r.metrics);
                    ch_sleep_ms(50);
                    rc = poll_device(bus, d, &r);
                }
                pthread_mutex_lock(&p->lock);
                requests = d->st.requests - requests;
                pthread_mutex_unlock(&p->lock);
            }
            if (rc != 0) {
                pthread_mutex_lock(&p->lock);
                char detail[sizeof d->st.last_detail];
                ch_strlcpy(detail, d->st.last_detail, sizeof detail);
                pthread_mutex_unlock(&p->lock);
                fprintf(out, "%-20s %-12s %5s  ERROR: %s%s%s\n", dc->id, bus->cfg->id, slave,
                        ch_strerror(rc), detail[0] ? ": " : "", detail);
                free(r.metrics);
                failed++;
                continue;
            }
            for (size_t m = 0; m < r.n_metrics; m++) {
                char req[24] = "";
                if (m == 0)
                    snprintf(req, sizeof req, "%llu", (unsigned long long)requests);
                fprintf(out, "%-20s %-12s %5s  %-16s %14.4g  %-8s %s\n", m ? "" : dc->id,
                        m ? "" : bus->cfg->id, slave, r.metrics[m].name, r.metrics[m].value,
                        r.metrics[m].unit, req);
            }
            free(r.metrics);
        }
        if (orc == 0) {
            bus->drv->close(bus->ctx);
            bus->ctx = NULL;
        }
    }
    for (size_t b = 0; b < p->n_buses; b++) {
        struct bus *bus = &p->buses[b];
        if (bus->ctx)
            bus->drv->close(bus->ctx);
        bus->ctx = NULL;
    }
    for (size_t i = 0; i < p->n_devs; i++) /* pushed after their device was printed */
        free(p->devs[i].once.metrics);
    return failed;
}

size_t poller_device_count(const struct poller *p)
{
    return p->n_devs;
}

void poller_device_stats(struct poller *p, size_t i, struct poller_dev_stats *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->devs[i].st;
    pthread_mutex_unlock(&p->lock);
}

void poller_set_output(struct poller *p, size_t i, bool on)
{
    if (i >= p->n_outs)
        return;
    pthread_mutex_lock(&p->lock);
    bool changed = p->outs[i].want != on;
    p->outs[i].want = on;
    pthread_mutex_unlock(&p->lock);
    if (changed) {
        pthread_mutex_lock(&p->wake_lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->wake_lock);
    }
}

size_t poller_output_count(const struct poller *p)
{
    return p->n_outs;
}

void poller_output_stats(struct poller *p, size_t i, struct poller_out_stats *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->outs[i].st;
    pthread_mutex_unlock(&p->lock);
}

size_t poller_bus_count(const struct poller *p)
{
    return p->n_buses;
}

size_t poller_bus_counters(struct poller *p, size_t b, const char **id, struct drv_counter *out,
                           size_t max)
{
    struct bus *bus = &p->buses[b];
    *id = bus->cfg->id;
    if (!bus->drv || !bus->drv->counters)
        return 0;
    return bus->drv->counters(bus->state, out, max);
}
