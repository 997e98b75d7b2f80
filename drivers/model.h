/* The site model: what the site config and the device profiles describe,
 * after validation. Built by edge/config.c, read (never written) by the
 * drivers, the scheduler and the uplink. Strings are owned by the model and
 * live until site_config_free(). */
#ifndef CAREHUB_MODEL_H
#define CAREHUB_MODEL_H

#include "cfg.h"

#include <stdbool.h>
#include <stdint.h>

struct fy_node;

enum reg_type { REG_BOOL, REG_U16, REG_I16, REG_U32, REG_I32, REG_F32 };
/* 32-bit word/byte order, A = most significant byte. */
enum reg_order { ORDER_ABCD, ORDER_CDAB, ORDER_BADC, ORDER_DCBA };

/* One value a device exposes: where it sits and how to turn it into a metric. */
struct reg_def {
    char *metric;
    int64_t fc;      /* Modbus function code: 1 coils, 2 discrete inputs, 3 holding, 4 input */
    int64_t address; /* 0-based protocol address */
    int type;        /* enum reg_type */
    int order;       /* enum reg_order, for 32-bit types */
    int64_t bit;     /* -1, or a bit 0..15 of a u16 register (status flags) */
    double scale;
    double offset;
    char *unit;
    struct fy_node *node;
};

/* A device model, described once in its own file. */
struct profile {
    char *id;
    char *description;
    char *measurement;     /* InfluxDB measurement, default "environment" */
    int64_t max_gap;       /* unused registers bridged to merge two reads */
    int64_t max_registers; /* per request (<= 125) */
    struct cfg_list regs;  /* struct reg_def */
    char *path;            /* file it came from */
    struct fy_node *node;
};

struct uplink_cfg {
    char *broker;
    char *client_id;
    char *username;
    char *password;
    struct cfg_tls tls;
    int64_t keepalive_ms;
    int64_t batch_max; /* readings per telemetry message */
    int64_t batch_interval_ms;
    int64_t max_inflight; /* telemetry messages awaiting PUBACK */
};

/* The gateway's store and forward spool (common/spool.h). */
struct spool_cfg {
    char *dir;
    int64_t max_bytes;
    int64_t commit_interval_ms; /* telemetry fsync window: a power cut loses at most this */
    int64_t replay_rate;        /* readings/s sent from a backlog, beside live data */
};

enum bus_type { BUS_MODBUS_RTU, BUS_MODBUS_TCP };

struct bus_cfg {
    char *id;
    int type; /* enum bus_type */
    /* serial */
    char *device;
    int64_t baud;
    int parity; /* 'N', 'E', 'O' */
    int64_t data_bits;
    int64_t stop_bits;
    /* tcp */
    char *host;
    int64_t port;
    /* both */
    int64_t timeout_ms;     /* response timeout */
    int64_t turnaround_ms;  /* silence between two requests on the line */
    int64_t backoff_max_ms; /* cap of a failing device's retry delay */
    struct fy_node *node;
};

struct device_cfg {
    char *id;
    char *bus;
    int64_t slave;
    char *profile;
    int64_t interval_ms;
    char *room;
    bool enabled;
    struct fy_node *node;
    /* resolved by site_config_load */
    const struct profile *prof;
    const struct bus_cfg *busp;
};

struct site_config {
    char *site;
    char *gateway;
    int log_level; /* enum log_level */
    struct uplink_cfg uplink;
    struct spool_cfg spool;
    struct cfg_list profile_paths; /* char *: files or directories */
    struct cfg_list buses;         /* struct bus_cfg */
    struct cfg_list devices;       /* struct device_cfg */
    int64_t self_metrics_interval_ms;
    /* loaded from profile_paths */
    size_t n_profiles;
    struct profile *profiles;
    char *path;
};

#define SITE_BUS(c, i)    (&((struct bus_cfg *)(c)->buses.items)[i])
#define SITE_DEV(c, i)    (&((struct device_cfg *)(c)->devices.items)[i])
#define PROFILE_REG(p, i) (&((struct reg_def *)(p)->regs.items)[i])

/* Registers a 32-bit or 16-bit type occupies. */
unsigned reg_type_words(int type);

#endif
