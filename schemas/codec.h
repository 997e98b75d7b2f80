/* The wire contract in C: telemetry batches, gateway status messages, alarm
 * transitions (alerts) and commands as they travel on
 * carehub/v1/{site}/{gateway}/{kind}. The JSON Schema files beside this
 * header (telemetry, status, alert and command .schema.json) say the same
 * thing; tests check every example payload against both.
 *
 * Decoders treat their input as hostile: they check every field and, on
 * failure, write a message naming the field (e.g. "readings[3].metrics.co2:
 * not a number") into err and return CH_EINVAL. Nothing is half-filled on
 * failure: *out is left empty. */
#ifndef CAREHUB_CODEC_H
#define CAREHUB_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CH_ID_MAX       65 /* identifiers: 1..64 chars of [A-Za-z0-9_.-] plus NUL */
#define CH_UNIT_MAX     24 /* unit text, UTF-8 ("µg/m³") */
#define CH_VERSION_MAX  32
#define CH_MAX_READINGS 10000 /* per telemetry batch */
#define CH_MAX_METRICS  256   /* per reading */
#define CH_MAX_DEVICES  10000 /* per status inventory */

#define CH_SCHEMA_TELEMETRY "carehub/telemetry/1"
#define CH_SCHEMA_STATUS    "carehub/status/1"
#define CH_SCHEMA_ALERT     "carehub/alert/1"
#define CH_SCHEMA_COMMAND   "carehub/command/1"
#define CH_SCHEMA_ACK       "carehub/ack/1"

/* Reading and alert numbers: each gateway numbers its readings and,
 * separately, its alerts 1, 2, 3... (its spool's record ids), kept across
 * restarts. On the wire a number is 1..CH_NUMBER_MAX; 0 in a struct means
 * "not said" (a sender from before numbering, or a will). */
#define CH_NUMBER_MAX ((UINT64_C(1) << 62) - 1)

enum ch_quality { CH_Q_GOOD = 0, CH_Q_UNCERTAIN, CH_Q_BAD };

const char *ch_quality_name(enum ch_quality q); /* "good", "uncertain", "bad" */

struct ch_metric {
    char name[CH_ID_MAX];   /* metric name, an identifier */
    double value;           /* always finite */
    char unit[CH_UNIT_MAX]; /* may be empty */
};

/* One device read at one instant: several metrics share a timestamp. */
struct ch_reading {
    char device[CH_ID_MAX];
    char measurement[CH_ID_MAX]; /* InfluxDB measurement, e.g. "environment" */
    char room[CH_ID_MAX];        /* room/bed label; may be empty */
    int64_t ts_ms;               /* Unix epoch milliseconds */
    enum ch_quality quality;
    size_t n_metrics;
    struct ch_metric *metrics; /* owned by the reading */
};

struct ch_telemetry {
    char site[CH_ID_MAX];
    char gateway[CH_ID_MAX];
    uint64_t seq;    /* per-gateway message sequence, < 2^63 */
    int64_t ts_ms;   /* when the batch was made */
    bool historical; /* replayed from the spool after an outage */
    uint64_t oldest; /* the oldest reading number the gateway still holds: every
                        number below was stored by a hub or is lost; 0: not said */
    size_t n_readings;
    struct ch_reading *readings; /* owned by the batch */
};

/* Display names people read, in any language, travel beside the ASCII ids
 * (ch_valid_name: 1..127 bytes of UTF-8 without control characters); an
 * empty name: show the id. */
#define CH_NAME_MAX 128

struct ch_device_info {
    char id[CH_ID_MAX];
    char profile[CH_ID_MAX];
    char bus[CH_ID_MAX];
    char room[CH_ID_MAX];        /* may be empty */
    char name[CH_NAME_MAX];      /* the device's display name; may be empty */
    char room_name[CH_NAME_MAX]; /* its room's; may be empty */
};

struct ch_status {
    char site[CH_ID_MAX];
    char gateway[CH_ID_MAX];
    bool online;
    int64_t ts_ms;                /* 0 when absent (the MQTT will has no time) */
    char version[CH_VERSION_MAX]; /* may be empty (will) */
    char boot_id[33];             /* may be empty */
    uint64_t oldest_reading;      /* as ch_telemetry.oldest; 0: not said */
    uint64_t oldest_alert;        /* as ch_alert.oldest; 0: not said */
    char site_name[CH_NAME_MAX];  /* may be empty */
    size_t n_devices;
    struct ch_device_info *devices; /* owned */
};

/* ---- alerts: one message per alarm transition (topic .../alert) ---------
 * ISA-18.2 / IEC 62682 life cycle, IEC 60601-1-8 priorities. An alarm is one
 * (rule, device) pair; its id "rule:device" is stable, and one occurrence of
 * it (raise ... back to normal) is (alarm_id, raised_ms). */
#define CH_ALARM_ID_MAX   130       /* "rule:device" plus NUL */
#define CH_TEXT_MAX       256       /* message text, UTF-8, NUL included */
#define CH_ESCALATION_MAX 100       /* highest escalation level on the wire */
#define CH_SHELVE_MAX_MS  604800000 /* longest shelving a command may ask: 7 days */

enum ch_priority { CH_PRIO_LOW = 0, CH_PRIO_MEDIUM = 1, CH_PRIO_HIGH = 2 };
/* "low", "medium", "high" */
const char *ch_priority_name(int p);

enum ch_alarm_state {
    CH_AS_NORMAL = 0,
    CH_AS_UNACK,     /* active, unacknowledged */
    CH_AS_ACKED,     /* active, acknowledged */
    CH_AS_RTN_UNACK, /* returned to normal, not yet acknowledged */
    CH_AS_SHELVED,   /* suppressed by a carer until shelved_until_ms */
    CH_AS_OOS,       /* out of service (maintenance) */
};
/* "normal", "unack", "acked", "rtn_unack", "shelved", "out_of_service" */
const char *ch_alarm_state_name(int s);

enum ch_alarm_event {
    CH_AE_RAISE = 0,      /* condition became active: -> unack */
    CH_AE_ACK,            /* acknowledged: unack -> acked, rtn_unack -> normal */
    CH_AE_CLEAR,          /* acked and the condition cleared: -> normal */
    CH_AE_RTN,            /* unacknowledged and the condition cleared: -> rtn_unack */
    CH_AE_ESCALATE,       /* still unacknowledged after the rule's delay: escalation++ */
    CH_AE_SHELVE,         /* -> shelved */
    CH_AE_UNSHELVE,       /* shelving ended (expiry or by hand) */
    CH_AE_OUT_OF_SERVICE, /* -> out_of_service */
    CH_AE_IN_SERVICE,     /* back in service */
    CH_AE_FLOOD,     /* the site's alarm rate passed the flood limit (alarm "flood:<gateway>") */
    CH_AE_FLOOD_END, /* and fell back */
    CH_AE_NOTIFIED,  /* someone was told (by: who, message: the channel's outcome, escalation:
                        the level): no change of state, a line of the alarm's history */
};
/* "raise", "ack", "clear", "rtn", "escalate", "shelve", "unshelve",
 * "out_of_service", "in_service", "flood", "flood_end", "notified" */
const char *ch_alarm_event_name(int e);

/* One alarm transition. Each field alone:
 * - site, gateway, rule, device: identifiers; alarm_id is exactly
 *   rule ":" device. The site's flood alarm is rule "flood" with device = the
 *   gateway ("flood:gw-01"); events flood/flood_end belong to it alone.
 * - room, bed, resident, metric: identifier or empty (metric also a valid
 *   metric name: not "time"/"seq", not starting with '_'); group: empty or an
 *   alarm id; message: < CH_TEXT_MAX bytes, by: < CH_ID_MAX bytes, both UTF-8
 *   without control characters (so a message with a newline is refused:
 *   callers filling it from templates must flatten it first).
 * - times: ts_ms in 1..2262-04-11; the others 0 (absent) or in that range.
 * - escalation 0..CH_ESCALATION_MAX; value finite when has_value.
 * And together (encoder and decoder refuse anything else):
 * - state after each event: raise -> unack; ack -> acked or normal;
 *   clear -> normal; rtn -> rtn_unack; escalate -> unack or rtn_unack (and
 *   escalation >= 1); shelve -> shelved; out_of_service -> out_of_service;
 *   unshelve and in_service -> normal, unack, acked or rtn_unack;
 *   flood -> unack or acked; flood_end -> normal or rtn_unack.
 * - shelved_until_ms != 0 exactly when state is shelved;
 *   raised_ms != 0 in unack, acked, rtn_unack and on raise;
 *   acked_ms != 0 in acked and on ack;
 *   cleared_ms != 0 in rtn_unack and on rtn and clear.
 * On the wire, empty strings, zero times and a value without has_value are
 * left out. */
struct ch_alert {
    char site[CH_ID_MAX];
    char gateway[CH_ID_MAX];
    char alarm_id[CH_ALARM_ID_MAX]; /* "rule:device" */
    char rule[CH_ID_MAX];
    char device[CH_ID_MAX];
    char room[CH_ID_MAX];     /* may be empty */
    char bed[CH_ID_MAX];      /* may be empty */
    char resident[CH_ID_MAX]; /* pseudonym; may be empty */
    int priority;             /* enum ch_priority */
    int state;                /* enum ch_alarm_state, after this transition */
    int event;                /* enum ch_alarm_event */
    int escalation;           /* 0 = not escalated */
    bool latched;
    char metric[CH_ID_MAX]; /* triggering metric; may be empty (stale data, flood) */
    bool has_value;
    double value;                /* triggering value (finite) when has_value */
    char message[CH_TEXT_MAX];   /* for staff; may be empty */
    int64_t ts_ms;               /* time of this transition */
    int64_t raised_ms;           /* start of this occurrence; 0 if none */
    int64_t acked_ms;            /* 0: not acknowledged (in this occurrence) */
    int64_t cleared_ms;          /* 0: condition not cleared (in this occurrence) */
    int64_t shelved_until_ms;    /* 0: not shelved */
    char by[CH_ID_MAX];          /* who acknowledged/shelved ("console:nurse1"); may be empty */
    char group[CH_ALARM_ID_MAX]; /* flood alarm it is grouped under; may be empty */
    uint64_t seq;                /* the gateway's alert number; 0: not said */
    uint64_t oldest;             /* the oldest alert number the gateway still holds; 0: not said */
    /* what happened, in words a console turns into an icon and a title:
     * an identifier (sos, fall, wandering, bed_exit, vital_signs, ...; see
     * alert.schema.json); may be empty (a console shows "alarm") */
    char kind[CH_ID_MAX];
    /* display names (CH_NAME_MAX above), each may be empty: the site's,
     * room's (of the zone in room when located), bed's, resident's
     * (a label for staff; never shown to a regulator) and device's */
    char site_name[CH_NAME_MAX];
    char room_name[CH_NAME_MAX];
    char bed_name[CH_NAME_MAX];
    char resident_name[CH_NAME_MAX];
    char device_name[CH_NAME_MAX];
    int64_t located_ms; /* room is where a wearable was located at this time; 0: configured room */
};

/* Commands to a gateway (topic .../cmd/<action>, and the local console):
 * acknowledge, shelve, unshelve, take out of or put back in service. */
enum ch_command_action {
    CH_CMD_ACK = 0,
    CH_CMD_SHELVE,
    CH_CMD_UNSHELVE,
    CH_CMD_OUT_OF_SERVICE,
    CH_CMD_IN_SERVICE
};
/* "ack", "shelve", "unshelve", "out_of_service", "in_service" */
const char *ch_command_action_name(int a);

/* The role of whoever asks, as the receiving side authenticated it: a
 * gateway allows taking alarms out of and back into service to admins only. */
enum ch_role { CH_ROLE_STAFF = 0, CH_ROLE_ADMIN = 1 };
/* "staff", "admin" */
const char *ch_role_name(int r);

struct ch_command {
    int action;                     /* enum ch_command_action */
    char alarm_id[CH_ALARM_ID_MAX]; /* "rule:device" */
    char by[CH_ID_MAX];             /* who asks ("hub:operator7"); required, text as in ch_alert */
    int64_t ts_ms;                  /* when asked */
    int64_t duration_ms;            /* shelve: how long, 1..CH_SHELVE_MAX_MS; other actions: 0 */
    int role;                       /* enum ch_role; "role" on the wire, staff when absent. Only
                                       a hub's word counts (the broker lets only hubs publish
                                       commands upstream); elsewhere the receiver sets it */
};

/* Encoders return compact JSON, NUL-terminated; caller frees. NULL only if
 * the input violates the contract. */
char *ch_alert_encode(const struct ch_alert *a);
char *ch_command_encode(const struct ch_command *c);
/* Decoders as the ones below: 0, or CH_EINVAL with the field named in err. */
int ch_alert_decode(const char *buf, size_t len, struct ch_alert *out, char *err, size_t errn);
int ch_command_decode(const char *buf, size_t len, struct ch_command *out, char *err, size_t errn);
/* Parses an action from a topic's kind ("cmd/ack" -> CH_CMD_ACK) or from its
 * bare name ("ack"); -1 if it names none (or name is NULL). */
int ch_command_action_parse(const char *name);

/* Encoders return compact JSON, NUL-terminated; caller frees. NULL only if
 * the input violates the contract (bad id, non-finite value). */
char *ch_telemetry_encode(const struct ch_telemetry *t);
char *ch_status_encode(const struct ch_status *s);

/* A telemetry message in two steps, for senders that store readings before
 * they know the message's sequence number (the edge's spool):
 * ch_readings_encode() makes the "readings" JSON array (caller frees; NULL if
 * any reading violates the contract); ch_telemetry_wrap() puts the envelope
 * around such an array (len bytes, borrowed) and returns the whole message
 * (caller frees; NULL for a bad id, seq or time). */
char *ch_readings_encode(const struct ch_reading *readings, size_t n);
/* One reading as a JSON object: joined with commas inside [ ], such objects
 * make a readings array. Caller frees; NULL if it violates the contract. */
char *ch_reading_encode(const struct ch_reading *r);
char *ch_telemetry_wrap(const char *site, const char *gateway, uint64_t seq, int64_t ts_ms,
                        bool historical, uint64_t oldest, const char *readings_json, size_t len);

/* The numbers added to a message the edge stored before it knew them: an
 * alert (JSON object, len bytes, borrowed) gets "seq" and "oldest"; a status
 * gets "oldest_reading" and "oldest_alert" (a 0 is left out). Return the new
 * message (caller frees), or NULL when json is not an object or a number is
 * above CH_NUMBER_MAX. */
char *ch_alert_numbered(const char *json, size_t len, uint64_t seq, uint64_t oldest);
char *ch_status_numbered(const char *json, size_t len, uint64_t oldest_reading,
                         uint64_t oldest_alert);

/* ---- acknowledgements: hub -> gateway (topic carehub/ack/v1/{site}/{gw}) -
 * Outside carehub/v1/, so that hubs, subscribed to carehub/v1/+/+/#, do not
 * get every gateway's acks back.
 * "These numbers are stored": the readings and alerts of one gateway that a
 * hub has made durable since its last ack, as ranges of numbers. A hub sends
 * at most one per gateway every few seconds; several hubs (a shared
 * subscription) each acknowledge what they stored, and the gateway frees a
 * record once some ack covers it. */
#define CH_ACK_MAX_RANGES 64 /* per lane and message */

struct ch_range {
    uint64_t lo, hi; /* 1 <= lo <= hi <= CH_NUMBER_MAX */
};

struct ch_ack {
    char site[CH_ID_MAX];
    char gateway[CH_ID_MAX];
    char hub[CH_ID_MAX]; /* the acknowledging hub instance; may be empty */
    int64_t ts_ms;
    size_t n_readings, n_alerts;
    struct ch_range readings[CH_ACK_MAX_RANGES];
    struct ch_range alerts[CH_ACK_MAX_RANGES];
};

/* Encoder and decoder as the others (compact JSON, caller frees; 0 or
 * CH_EINVAL naming the field). An ack with no range at all is valid. */
char *ch_ack_encode(const struct ch_ack *a);
int ch_ack_decode(const char *buf, size_t len, struct ch_ack *out, char *err, size_t errn);

/* Decoders: parse and validate buf (len bytes, need not be NUL-terminated).
 * On success fill *out (caller frees with the matching _free) and return 0.
 * On failure return CH_EINVAL with a message naming the field in err. */
int ch_telemetry_decode(const char *buf, size_t len, struct ch_telemetry *out, char *err,
                        size_t errn);
int ch_status_decode(const char *buf, size_t len, struct ch_status *out, char *err, size_t errn);

/* Lower level, for a caller that must tell "not JSON" from "JSON that breaks
 * the contract" (the hub counts the two apart); the decoders above are these
 * two steps. ch_json_parse() parses strict JSON (duplicate keys and trailing
 * text are errors); it returns a new reference (caller json_decref()s) or NULL
 * with the reason in err. The _from_json functions validate a parsed document
 * (borrowed) exactly as the decoders do. */
struct json_t;
struct json_t *ch_json_parse(const char *buf, size_t len, char *err, size_t errn);
int ch_telemetry_from_json(const struct json_t *root, struct ch_telemetry *out, char *err,
                           size_t errn);
int ch_status_from_json(const struct json_t *root, struct ch_status *out, char *err, size_t errn);
int ch_alert_from_json(const struct json_t *root, struct ch_alert *out, char *err, size_t errn);
int ch_command_from_json(const struct json_t *root, struct ch_command *out, char *err, size_t errn);

/* (struct ch_alert and struct ch_command own no memory: nothing to free; on
 * failure their decoders leave *out all zero.) */

/* Release what a decoder (or a caller building the struct by hand with
 * malloc'ed arrays) put in the struct; the struct itself is not freed. */
void ch_telemetry_free(struct ch_telemetry *t);
void ch_status_free(struct ch_status *s);

/* Topic helpers. ch_topic() writes "carehub/v1/{site}/{gateway}/{kind}";
 * returns false if it does not fit. ch_topic_parse() splits a topic of that
 * shape (kind may contain '/', e.g. "cmd/ack"); returns false if the topic is
 * not in the carehub/v1 namespace or an id is invalid. */
bool ch_topic(char *buf, size_t n, const char *site, const char *gateway, const char *kind);
bool ch_topic_parse(const char *topic, char site[CH_ID_MAX], char gateway[CH_ID_MAX],
                    const char **kind);
/* "carehub/ack/v1/{site}/{gateway}", where a hub acknowledges storage to one
 * gateway; false if it does not fit or an id is invalid. */
bool ch_ack_topic(char *buf, size_t n, const char *site, const char *gateway);

#endif
