/* The driver interface. Every kind of device connection (a Modbus RTU line, a
 * Modbus TCP gateway, later a radar UART or a BLE receiver) is a table of
 * function pointers; the scheduler only ever calls through the table, so the
 * core never asks what kind of bus it drives.
 *
 * Threading: one scheduler thread owns a bus. open/poll/close of one bus are
 * never called concurrently; different buses run in parallel. */
#ifndef CAREHUB_DRIVER_H
#define CAREHUB_DRIVER_H

#include "cfg.h"
#include "codec.h"
#include "model.h"

#include <stddef.h>

/* Why a poll failed, for self-metrics: a wrong register map (exceptions)
 * must not look like a flaky line (timeouts, CRC errors). */
enum drv_fail {
    DRV_FAIL_NONE,      /* not said: the poller goes by the error code */
    DRV_FAIL_TIMEOUT,   /* no answer */
    DRV_FAIL_EXCEPTION, /* the device refused the request (a Modbus exception) */
    DRV_FAIL_CRC,       /* a frame damaged on the line */
    DRV_FAIL_REPLY      /* an answer that does not answer the request */
};

/* What one poll cost on the wire (for self-metrics and the coalescing bench),
 * and on failure why, in words an installer acts on ("exception 02 illegal
 * data address (fc 3, registers 100..109)"). */
struct drv_poll_stats {
    unsigned requests;  /* requests sent */
    unsigned registers; /* registers (or bits) transferred */
    enum drv_fail fail;
    char detail[128];
};

/* A bus type a driver serves: its name in the site file (a bus's type:)
 * and the keys a bus of it takes besides those every bus has (id, type,
 * backoff_max: edge/site.c), as offsets into struct bus_cfg. A key of
 * another type is refused by --check. */
/* How a device on a bus of a type is addressed: the one of the device keys
 * slave, mac and topic it must have (it may have none of the others). */
enum drv_address {
    DRV_ADDR_SLAVE, /* a Modbus unit id */
    DRV_ADDR_MAC,   /* a wearable's BLE address */
    DRV_ADDR_TOPIC, /* the MQTT topic it publishes on */
    DRV_ADDR_NONE   /* the line itself (one radar per serial line) */
};

struct driver_bus_type {
    int type;         /* enum bus_type */
    const char *name; /* "modbus-rtu" */
    const struct cfg_key *keys;
    enum drv_address address;
};

/* A profile protocol a driver reads (a profile's protocol:). */
struct driver_protocol {
    int protocol;     /* enum protocol */
    const char *name; /* "modbus" */
    /* Checks a profile of it beyond the profile's key table; reports with
     * cfg_report() and returns the number of errors. */
    int (*check)(struct profile *p);
    /* Optional: whether a reading of a device with profile p carries metric
     * m besides the profile's registers and metrics (what a BLE wearable's
     * reading adds: in_range, zone, ...). Rules may name only those. */
    bool (*has_metric)(const struct profile *p, const char *m);
};

/* Where a driver whose devices push (drivers with start) hands what they
 * send, as it arrives: from the driver's own thread (an MQTT client's),
 * never after close() has returned. */
struct drv_emit {
    void *ctx;
    /* One reading of dev: the driver fills metrics (allocated: reading()
     * takes them), ts_ms, quality, and room only when it knows better than
     * the configuration (a wearable's zone); the core fills the ids. */
    void (*reading)(void *ctx, const struct device_cfg *dev, struct ch_reading *r);
    /* A message dev sent that the driver rejected (and logged, rate-limited):
     * counted in the device's self-metrics. */
    void (*rejected)(void *ctx, const struct device_cfg *dev);
};

/* One of a driver's counts about a bus, for self-metrics (edge_bus). */
struct drv_counter {
    const char *name; /* static */
    double value;
};

struct driver {
    const char *name;
    /* Bus types this driver serves, terminated by {.name = NULL}. */
    const struct driver_bus_type *bus_types;
    /* Profile protocols it reads, terminated by {.name = NULL}. */
    const struct driver_protocol *protocols;
    /* Its buses are opened even without devices of their own: they feed
     * what the driver's buses share (BLE receivers of another make hearing
     * the site's wearables). */
    bool open_without_devices;
    /* Optional: the bus's own state for as long as its configuration is in
     * force, passed to prepare, release and open: what finds a device from a
     * message (a pushing bus's devices and topic index), a radar line's one
     * radar. Made before the bus's first prepare(), freed by detach() after
     * its last release(); without attach, state is NULL. *shared is one
     * slot for all the buses of this driver in one configuration (NULL at
     * first): what they share (the site's one wearable table), freed by
     * release_shared() after every bus is detached. */
    void *(*attach)(const struct bus_cfg *bus, void **shared);
    void (*detach)(void *state);
    void (*release_shared)(void *shared);
    /* Optional: after every bus of the configuration is attached and every
     * device prepared, builds and checks what the driver's buses share (the
     * site's zones, merged from every bus): reports with cfg_report() and
     * returns CH_ECONFIG, so a bad configuration is refused at --check and
     * at a reload rather than failing at open. Once per driver in use. */
    int (*check_shared)(void *shared);
    /* Optional: the bus's counts as of now (messages, rejections by
     * reason): returns how many it has and writes the first max of them to
     * out. Any thread. */
    size_t (*counters)(void *state, struct drv_counter *out, size_t max);
    /* Checks a device against its profile and precomputes what polling
     * needs (e.g. coalesced requests) into *dev_ctx (released with
     * release()). Reports problems with cfg_report() and returns CH_ECONFIG. */
    int (*prepare)(void *state, const struct bus_cfg *bus, const struct device_cfg *dev,
                   void **dev_ctx);
    void (*release)(void *state, void *dev_ctx);
    /* Opens the bus (serial port, TCP connection). On failure returns a
     * negative error and the scheduler retries later. */
    int (*open)(void *state, const struct bus_cfg *bus, void **bus_ctx);
    /* Optional, for devices that push their data: called once the bus is
     * open, and from then until close() the driver hands every reading to
     * emit as it arrives (emit is borrowed and outlives the bus). poll() is
     * then a liveness check only: CH_ENODATA while the device is heard,
     * CH_ETIMEOUT once it has been silent too long. Returns 0 or an error as
     * open does. */
    int (*start)(void *bus_ctx, const struct drv_emit *emit);
    /* Reads one device. Fills out->metrics (allocated, caller frees via
     * ch_reading's owner) and out->ts_ms / quality; the caller has set the
     * ids. Returns 0, CH_ENODATA (a device that pushes: nothing new and
     * nothing wrong), or CH_ETIMEOUT (no answer), CH_EEXCEPTION (device
     * answered with an exception), CH_EPROTO (garbled answer), -errno for a
     * broken connection (the scheduler then closes and reopens the bus). */
    int (*poll)(void *bus_ctx, const struct device_cfg *dev, void *dev_ctx, struct ch_reading *out,
                struct drv_poll_stats *stats);
    void (*close)(void *bus_ctx);
    /* Sets one output (a Modbus coil driving a sounder or a nurse-call
     * relay) of the device at address slave. NULL if the driver has no
     * outputs. Returns 0 or an error as poll does. */
    int (*write_coil)(void *bus_ctx, int64_t slave, int64_t coil, bool on);
};

/* Finds the driver serving a bus type; NULL if none. */
const struct driver *driver_for_bus(int bus_type);
/* The table entry of a bus type, of a profile protocol; NULL if none. */
const struct driver_bus_type *driver_bus_type(int bus_type);
const struct driver_protocol *driver_protocol(int protocol);

/* Every profile protocol of every driver (a profile's protocol:), filled
 * by driver_types_init() like driver_bus_type_names. */
extern struct cfg_enum driver_protocol_names[];

/* For a protocol's check: a profile that lists metrics (metrics: [{metric,
 * unit}]) rather than Modbus registers has at least one and no registers.
 * Returns the number of errors (reported). */
int driver_check_metric_list(struct profile *p);

/* Every bus type of every driver, for the site file's table (cfg.h): the
 * names of type: and the keys each takes. Filled by driver_types_init()
 * (once, thread-safe), which a reader of the site file calls first; the
 * arrays' addresses are constants, for static tables. */
extern struct cfg_enum driver_bus_type_names[];
extern struct cfg_variant driver_bus_variants[];
void driver_types_init(void);

/* Serial line speeds termios supports (B1200 .. B921600), for a baud key;
 * on a line, a speed outside them would silently become 9600. */
extern const struct cfg_enum driver_baud_rates[];
extern const struct cfg_enum driver_parities[]; /* N, E, O */

/* The keys of a serial line (a driver_bus_type's keys begin with these),
 * default_baud its default speed: device (required), baud, parity, data_bits,
 * stop_bits, timeout. */
/* clang-format off */
#define DRIVER_SERIAL_KEYS(default_baud)                                                                            \
    {.key = "device",    .type = CFG_STR,      .offset = offsetof(struct bus_cfg, device), .required = true},    \
    {.key = "baud",      .type = CFG_ENUM,     .offset = offsetof(struct bus_cfg, baud), .def = default_baud,    \
     .enums = driver_baud_rates},                                                                                 \
    {.key = "parity",    .type = CFG_ENUM,     .offset = offsetof(struct bus_cfg, parity), .def = "N",           \
     .enums = driver_parities},                                                                                   \
    {.key = "data_bits", .type = CFG_INT,      .offset = offsetof(struct bus_cfg, data_bits), .def = "8",        \
     .min = 7, .max = 8},                                                                                         \
    {.key = "stop_bits", .type = CFG_INT,      .offset = offsetof(struct bus_cfg, stop_bits), .def = "1",        \
     .min = 1, .max = 2},                                                                                         \
    {.key = "timeout",   .type = CFG_DURATION, .offset = offsetof(struct bus_cfg, timeout_ms), .def = "1s",      \
     .min = 10, .max = 60000}
/* clang-format on */

/* True if the error means the connection is broken and must be reopened. */
bool driver_err_is_link(int err);

#endif
