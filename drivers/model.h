/* The device model: the profiles (how a device's data is read), the buses
 * and the devices of a site file, after validation. Built by edge/site.c,
 * read (never written) by the drivers and the scheduler; the rest of the
 * site (uplink, rules, alarms, consoles: edge/site_model.h) is not the drivers'
 * business. Strings are owned by the model and live until site_free(). */
#ifndef CAREHUB_MODEL_H
#define CAREHUB_MODEL_H

#include "ble_decode.h"
#include "ble_zone.h"
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
/* How a device speaks: the driver family its profile describes. */
enum protocol { PROTO_MODBUS = 0, PROTO_MR60_RADAR, PROTO_MQTT_JSON, PROTO_BLE };

/* A metric a non-Modbus device reports. A radar's driver knows where each
 * is; for JSON over MQTT, field names it in the payload ("vitals.heart":
 * object members joined by dots) and value = raw * scale + offset. */
struct metric_def {
    char *metric;
    char *unit;
    char *field;
    double scale;
    double offset;
    struct fy_node *node;
};

struct profile {
    char *id;
    int protocol; /* enum protocol; Modbus profiles have registers, others metrics */
    char *description;
    char *measurement;       /* InfluxDB measurement, default "environment" */
    char *kind;              /* what the device is, for rule selection: "environment"
                                (default), "bed", "wearable", "call", "safety", ... */
    int64_t max_gap;         /* unused registers bridged to merge two reads */
    int64_t backoff_max_ms;  /* cap of a failing device's retry delay, below the bus's
                                (a safety device: seconds); 0: the bus's */
    int64_t max_registers;   /* per request (<= 125) */
    struct cfg_list regs;    /* struct reg_def (Modbus) */
    struct cfg_list metrics; /* struct metric_def (other protocols) */
    struct ble_profile ble;  /* protocol ble: how to read its advertisements */
    char *path;              /* file it came from */
    struct fy_node *node;
};

enum bus_type { BUS_MODBUS_RTU, BUS_MODBUS_TCP, BUS_RADAR_UART, BUS_MQTT, BUS_BLE };

struct bus_cfg {
    char *id;
    int type; /* enum bus_type */
    /* serial */
    char *device;
    int baud;   /* a termios speed (driver_baud_rates): an enum key, stored as int */
    int parity; /* 'N', 'E', 'O' */
    int64_t data_bits;
    int64_t stop_bits;
    /* tcp, mqtt and ble (the broker the devices or receivers publish to) */
    char *host;
    int64_t port;
    /* ble: BLE receivers forwarding advertisements to that broker */
    int format;             /* enum ble_rx_format */
    struct cfg_list topics; /* char *: subscription filters of the receivers */
    struct ble_location_cfg location;
    int64_t out_of_range_ms; /* no receiver heard a wearable this long: in_range 0 */
    double battery_low;      /* % */
    /* both */
    int64_t timeout_ms;     /* response timeout */
    int64_t turnaround_ms;  /* silence between two requests on the line */
    int64_t backoff_max_ms; /* cap of a failing device's retry delay */
    struct fy_node *node;
};

struct device_cfg {
    char *id;
    char *bus;
    int64_t slave; /* -1: none (a device on an mqtt bus) */
    char *profile;
    int64_t interval_ms;
    char *room;
    char *topic; /* mqtt bus: the topic the device publishes on */
    char *mac;   /* ble bus: the wearable's address */
    char *name;  /* display name, any language; NULL: the id */
    bool enabled;
    struct fy_node *node;
    /* resolved by site_config_load */
    const struct profile *prof;
    const struct bus_cfg *busp;
};

#define PROFILE_REG(p, i)    (&((struct reg_def *)(p)->regs.items)[i])
#define PROFILE_METRIC(p, i) (&((struct metric_def *)(p)->metrics.items)[i])

/* Registers a 32-bit or 16-bit type occupies. */
unsigned reg_type_words(int type);

#endif
