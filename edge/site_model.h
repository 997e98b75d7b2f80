/* The site model: what a site file says besides its devices (drivers/
 * model.h): the uplink and its spool, rooms and residents, care rules and
 * alarms, the consoles, the local broker, annunciators. Built by
 * edge/site.c, read (never written) by the scheduler, the rules, the
 * alarms and the uplink. Strings are owned by the model and live until
 * site_free(). */
#ifndef CAREHUB_SITE_MODEL_H
#define CAREHUB_SITE_MODEL_H

#include "cfg.h"
#include "model.h"

#include <stdbool.h>
#include <stdint.h>

struct fy_node;
struct notify_cfg;

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
#define SITE_RESIDENT(c, i)    (&((struct resident_cfg *)(c)->residents.items)[i])
#define SITE_ANNUNCIATOR(c, i) (&((struct annunciator_cfg *)(c)->annunciators.items)[i])

#endif
