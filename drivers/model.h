/* The site model: what the site config and the device profiles describe,
 * after validation. Built by edge/config.c, read (never written) by the
 * drivers, the scheduler and the uplink. Strings are owned by the model and
 * live until site_config_free(). */
#ifndef CAREHUB_MODEL_H
#define CAREHUB_MODEL_H

#include "ble_decode.h"
#include "ble_zone.h"
#include "cfg.h"

#include <stdbool.h>
#include <stdint.h>

struct fy_node;
struct notify_cfg;

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

struct uplink_cfg {
    char *broker;
    char *client_id;
    char *username;
    char *password;
    struct cfg_tls tls;
    int64_t keepalive_ms;
    int64_t batch_max; /* readings per telemetry message */
    int64_t batch_interval_ms;
    int64_t max_inflight;       /* telemetry messages awaiting PUBACK */
    int64_t reconnect_max_ms;   /* cap of the doubling delay between connection attempts */
    int delivery;               /* enum delivery: what frees a spooled record */
    int64_t hub_ack_timeout_ms; /* a record the broker took but no hub acknowledged within
                                   this (while hubs acknowledge) is offered again */
};

/* DELIVERY_HUB: a record leaves the spool when a hub says it stored it
 * (topic .../ack); DELIVERY_BROKER: at the broker's PUBACK (a broker with no
 * carehub hub behind it, e.g. a third-party platform). */
enum delivery { DELIVERY_HUB = 0, DELIVERY_BROKER = 1 };

/* The gateway's store and forward spool (common/spool.h). */
struct spool_cfg {
    char *dir;
    int64_t max_bytes;
    int64_t commit_interval_ms; /* telemetry fsync window: a power cut loses at most this */
    int64_t replay_rate;        /* readings/s sent from a backlog, beside live data */
    int64_t memory_bytes;       /* the disk failing: new records kept in memory, at most this */
    int64_t retry_interval_ms;  /* the disk failing: retried after this, doubling up to 8x */
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

/* ---- care rules and alarms (issue 4) ---------------------------------- */

/* Which devices a rule applies to. Every non-empty list must match (a
 * device matches a list if it is in it); all empty: every device. */
struct rule_select {
    struct cfg_list kinds;     /* char *: profile kinds */
    struct cfg_list profiles;  /* char *: profile ids */
    struct cfg_list devices;   /* char *: device ids */
    struct cfg_list rooms;     /* char *: room labels */
    struct cfg_list residents; /* char *: resident pseudonyms (their devices) */
    bool wandering_risk;       /* only devices of residents flagged at risk */
};

/* One rule, from the site file or a rule pack. See schemas/site-config.schema.json. */
struct rule_cfg {
    char *id;
    char *description;
    char *when;           /* condition, e.g. "hr < $hr_low or hr > $hr_high"; may be
                             absent for a pure stale-data rule */
    char *clear;          /* explicit clear condition; absent: "not when" with deadband */
    double deadband;      /* hysteresis: a comparison clears only this far past its limit */
    int64_t on_delay_ms;  /* "for": the condition must hold this long */
    int64_t off_delay_ms; /* "clear_for": must be clear this long (chatter damping) */
    int64_t stale_ms;     /* "no_data": no reading from the device for this long */
    char *window;         /* "22:00-06:00" in the site's time zone; absent: always */
    bool latch;           /* stays active until acknowledged (SOS, falls) */
    int priority;         /* enum ch_priority (schemas/codec.h) */
    int64_t escalate_ms;  /* unacknowledged this long: escalate (then again, each time) */
    int64_t escalate_max; /* highest escalation level */
    int kind;             /* enum rule_kind: what happened, for consoles and notifications */
    struct cfg_text message_text; /* text for staff, per locale (cfg.h CFG_TEXT) */
    const char *message;          /* message_text in the site's locale (borrowed; NULL: none):
                                     {value} {metric} {device} {room} {bed} {resident} are filled in
                                     with display names where there are ({room}: where the device's
                                     latest reading was located, a wearable's zone, else its room;
                                     {resident}: the resident's name, else the pseudonym) */
    struct rule_select select;
    struct cfg_list params; /* struct cfg_param: values of $name, overridable per resident */
    const char *source;     /* file the rule came from (borrowed) */
    struct fy_node *node;
};

/* A resident: a pseudonym for data (PIPL), and a label for the site's staff
 * (name: "301床 王奶奶"), shown on the site's consoles and notifications
 * and carried to the hub's staff; a hub never shows it to a regulator. */
struct resident_cfg {
    char *id;   /* pseudonym, e.g. "R-0417" */
    char *name; /* label for staff; NULL: the pseudonym */
    char *room;
    char *bed;
    struct cfg_list devices; /* char *: device ids assigned to the resident */
    bool wandering_risk;
    struct cfg_list params; /* struct cfg_param: personal values of rule $params */
    struct fy_node *node;
};

struct alarms_cfg {
    char *state_file;    /* durable alarm state; default <spool dir>/alarms.state */
    int64_t flood_count; /* more raises than this within flood_window: a flood */
    int64_t flood_window_ms;
    int64_t history_max;   /* transitions kept for the console */
    int64_t history_ms;    /* and for how long */
    int64_t shelve_max_ms; /* longest shelving a carer may ask for */
};

enum console_role { ROLE_STAFF = 0, ROLE_ADMIN = 1 };

struct console_user {
    char *name; /* log-in name, any language ("护士小王"), CONSOLE_USER_MAX bytes at most */
    char *password_hash; /* crypt(3) hash: "$y$..." (yescrypt) or "$6$..." */
    int role;            /* enum console_role; admin may also put alarms out of service */
    struct fy_node *node;
};

/* The local alarm console served by care-edge on the site LAN. */
struct console_cfg {
    bool enabled;
    char *bind; /* address to listen on */
    int64_t port;
    struct cfg_list users; /* struct console_user */
    int64_t session_ms;    /* how long a login lasts */
    int64_t max_clients;   /* concurrent event streams */
    struct cfg_https tls;  /* cert_file set: HTTPS only */
    struct cfg_http_limits connections;
    struct fy_node *node;
};

/* The gateway's local broker, for nurse-station apps; broker empty: none. */
struct local_mqtt_cfg {
    char *broker;
    char *client_id;
    char *username;
    char *password;      /* or read from password_file when the site file is loaded */
    char *password_file; /* first line of the file is the password */
    struct cfg_tls tls;  /* ssl:// brokers */
};

/* A Modbus coil driven by alarms: on while an alarm of one of the
 * priorities is active and unacknowledged (a sounder, strobe, nurse call). */
struct annunciator_cfg {
    char *id;
    char *bus;
    int64_t slave;
    int64_t coil;               /* 0-based coil address (FC05) */
    struct cfg_list priorities; /* char *: "high", "medium", "low" */
    bool include_acknowledged;  /* stay on while alarms are acknowledged but active */
    int64_t min_escalation;     /* on only for alarms escalated this far (0: from the raise) */
    struct fy_node *node;
    const struct bus_cfg *busp; /* resolved */
    unsigned prio_mask;         /* resolved: 1 << enum ch_priority */
};

/* What happened, for an icon and a title on the consoles (rule key kind). */
enum rule_kind {
    KIND_OTHER = 0,
    KIND_SOS,
    KIND_FALL,
    KIND_CALL,
    KIND_WANDERING,
    KIND_BED_EXIT,
    KIND_VITAL_SIGNS,
    KIND_INACTIVITY,
    KIND_DEVICE_BATTERY,
    KIND_DEVICE_OFFLINE,
    KIND_AIR_QUALITY,
    KIND_GAS,
    KIND_SMOKE,
    KIND_TEMPERATURE,
    KIND_GATEWAY,
};

/* Site locales: the language of rule messages, notifications and the
 * console's default. */
enum site_locale { LOCALE_EN = 0, LOCALE_ZH_CN };

/* Display names of places: a room (or a zone of the same id) and its beds. */
struct bed_cfg {
    char *id;
    char *name;
    struct fy_node *node;
};
struct room_cfg {
    char *id;
    char *name;
    struct cfg_list beds; /* struct bed_cfg */
    struct fy_node *node;
};

/* the longest console user name: "console:" + name must fit ch_alert.by */
#define CONSOLE_USER_MAX 56

struct site_config {
    char *site;
    char *gateway;
    char *site_name;       /* display name; NULL: the id */
    int locale;            /* enum site_locale */
    struct cfg_list rooms; /* struct room_cfg: display names of rooms, zones, beds */
    int log_level;         /* enum log_level */
    struct uplink_cfg uplink;
    struct spool_cfg spool;
    struct cfg_list profile_paths; /* char *: files or directories */
    struct cfg_list buses;         /* struct bus_cfg */
    struct cfg_list devices;       /* struct device_cfg */
    int64_t self_metrics_interval_ms;
    char *timezone;                /* IANA zone for rule windows; empty: the system's */
    struct cfg_list rule_packs;    /* char *: rule pack files */
    struct cfg_list rules;         /* struct rule_cfg, the site's own */
    struct cfg_list disable_rules; /* char *: ids of pack rules not used here */
    struct cfg_list residents;     /* struct resident_cfg */
    struct alarms_cfg alarms;
    struct console_cfg console;
    struct local_mqtt_cfg local_mqtt;
    struct cfg_list annunciators; /* struct annunciator_cfg */
    struct fy_node *notify_node;  /* notify: (common/notify.h parses it) */
    struct notify_cfg *notify;    /* parsed; NULL: no notifications */
    char *notify_src;             /* notify: as one line of YAML, to tell a change at a reload */
    /* loaded from profile_paths */
    size_t n_profiles;
    struct profile *profiles;
    /* every rule in force: the packs' (minus disable_rules), then the site's */
    size_t n_all_rules;
    const struct rule_cfg **all_rules;
    char *path;
};

#define SITE_BUS(c, i)         (&((struct bus_cfg *)(c)->buses.items)[i])
#define SITE_DEV(c, i)         (&((struct device_cfg *)(c)->devices.items)[i])
#define PROFILE_REG(p, i)      (&((struct reg_def *)(p)->regs.items)[i])
#define PROFILE_METRIC(p, i)   (&((struct metric_def *)(p)->metrics.items)[i])
#define SITE_RESIDENT(c, i)    (&((struct resident_cfg *)(c)->residents.items)[i])
#define SITE_ANNUNCIATOR(c, i) (&((struct annunciator_cfg *)(c)->annunciators.items)[i])

/* Registers a 32-bit or 16-bit type occupies. */
unsigned reg_type_words(int type);

#endif
