/* The wire contract in C: telemetry batches and gateway status messages as
 * they travel on carehub/v1/{site}/{gateway}/{kind}. The JSON Schema files
 * beside this header (telemetry.schema.json, status.schema.json) say the same
 * thing; tests check every payload against both.
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
    size_t n_readings;
    struct ch_reading *readings; /* owned by the batch */
};

struct ch_device_info {
    char id[CH_ID_MAX];
    char profile[CH_ID_MAX];
    char bus[CH_ID_MAX];
    char room[CH_ID_MAX]; /* may be empty */
};

struct ch_status {
    char site[CH_ID_MAX];
    char gateway[CH_ID_MAX];
    bool online;
    int64_t ts_ms;                /* 0 when absent (the MQTT will has no time) */
    char version[CH_VERSION_MAX]; /* may be empty (will) */
    char boot_id[33];             /* may be empty */
    size_t n_devices;
    struct ch_device_info *devices; /* owned */
};

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
                        bool historical, const char *readings_json, size_t len);

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

#endif
