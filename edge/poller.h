/* The poll scheduler: one thread per bus, each the only owner of its line.
 *
 * Every device has a next-due time on the monotonic clock. A bus thread
 * sleeps until its earliest device is due, polls it through the bus's driver
 * and hands the reading to the emit callback. Due times advance on a fixed
 * grid (due += interval), so a poll that ran late does not shift the ones
 * after it, and a device that is behind by more than one interval skips the
 * missed beats instead of bursting.
 *
 * A device whose poll fails is retried after a doubling delay (interval, 2x,
 * 4x, ... capped at the bus's backoff_max) and reported offline after
 * POLLER_OFFLINE_AFTER consecutive failures; one success resets both. On a
 * serial line a silent device costs one response timeout per retry, which
 * the back-off keeps small, so the other slaves keep their cadence.
 * A broken connection (driver_err_is_link) closes the bus; it is reopened
 * with the same back-off.
 *
 * A driver that pushes (start) hands each reading to emit from its own
 * thread as it arrives; its devices' polls are liveness checks. Every bus is
 * closed by poller_stop(), so nothing is emitted after it returns. */
#ifndef CAREHUB_POLLER_H
#define CAREHUB_POLLER_H

#include "codec.h"
#include "site_model.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define POLLER_OFFLINE_AFTER 2

struct poller;

/* Receives one reading of device dev (an index as in poller_device_stats);
 * takes ownership of r->metrics. Called from bus threads and pushing
 * drivers' threads, concurrently for different buses. */
typedef void (*poller_emit_fn)(void *arg, size_t dev, struct ch_reading *r);

/* Prepares every enabled device with its bus's driver (request plans).
 * Borrows cfg for the poller's lifetime. Returns 0, or CH_ECONFIG after
 * reporting the problem. */
int poller_create(const struct site_config *cfg, poller_emit_fn emit, void *arg,
                  struct poller **out);

/* Starts one thread per bus. Returns 0 or -errno. */
int poller_start(struct poller *p);

/* Stops and joins the bus threads; a poll in progress finishes first. */
void poller_stop(struct poller *p);

void poller_destroy(struct poller *p);

/* Polls every enabled device once, in configuration order, and prints a
 * table of decoded readings (or the error) to out. Returns the number of
 * devices that failed. For installers checking the wiring. */
int poller_once(struct poller *p, FILE *out);

struct poller_dev_stats {
    const char *id; /* borrowed from the config */
    uint64_t polls_ok;
    uint64_t polls_failed;
    uint64_t requests;
    uint64_t registers;
    /* failed polls by why (driver.h: enum drv_fail); the rest of
       polls_failed are broken links or errors a driver did not class */
    uint64_t timeouts;
    uint64_t exceptions;
    uint64_t crc_errors;
    uint64_t bad_replies;
    uint64_t rejected; /* messages a pushing device sent that were rejected */
    uint64_t dropped;  /* its readings dropped while its bus thread was behind */
    bool online;
    int last_err;           /* 0 after a success */
    char last_detail[128];  /* the driver's words on the last failure, or "" */
    double last_latency_ms; /* of the last successful poll */
};

/* Outputs: the site's annunciators (cfg->annunciators, same order), each a
 * coil written by its bus's thread. poller_set_output() records the wanted
 * level and wakes the thread; the write is retried until the device
 * confirms it and re-asserted every minute. Thread-safe. */
void poller_set_output(struct poller *p, size_t i, bool on);
size_t poller_output_count(const struct poller *p);

struct poller_out_stats {
    const char *id; /* borrowed */
    bool on;        /* last level the device confirmed */
    uint64_t writes_ok;
    uint64_t writes_failed;
    int last_err;
};
void poller_output_stats(struct poller *p, size_t i, struct poller_out_stats *out);

/* A bus's own counts, from its driver (messages a BLE receiver sent, and
 * those rejected, by reason): bus b's id into *id; returns how many there
 * are (0 for a driver that keeps none) and writes the first max to out.
 * Thread-safe. */
struct drv_counter;
size_t poller_bus_count(const struct poller *p);
size_t poller_bus_counters(struct poller *p, size_t b, const char **id, struct drv_counter *out,
                           size_t max);

size_t poller_device_count(const struct poller *p);
/* Copies device i's counters (thread-safe). */
void poller_device_stats(struct poller *p, size_t i, struct poller_dev_stats *out);

#endif
