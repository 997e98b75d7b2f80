/* InfluxDB line protocol, written into a growable buffer.
 *
 *   measurement,tag=v,tag=v field=1.5,field="s",count=3i 1763850000100\n
 *
 * A point is built with lp_begin, lp_tag (in key order: InfluxDB wants tags
 * sorted, and the caller knows its keys), lp_field_*, lp_end. Every name and
 * value is escaped for its place; newlines cannot be escaped in line protocol
 * and are dropped. Timestamps are milliseconds: write with precision=ms.
 *
 * Floats are printed with 15 significant digits, or 16 or 17 when needed to
 * read back as the same double (23.4 stays "23.4"), without the "i" suffix, so a metric stays a
 * float field even when a payload says 23 and the next 23.5. Integers (hub counters) always carry
 * "i".
 *
 * struct lp_buf is a plain value (like a string builder); its fields may be
 * read, and only the functions here change them. */
#ifndef CAREHUB_LINEPROTO_H
#define CAREHUB_LINEPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ch_telemetry;
struct ch_status;
struct ch_alert;

struct lp_buf {
    char *data; /* NUL-terminated once anything was written; owned */
    size_t len; /* bytes of complete points (and of the point being built) */
    size_t cap;
    size_t lines; /* complete points */
    size_t mark;  /* start of the point being built */
    int state;    /* 0 none, 1 tags, 2 fields */
};

/* Longest text lp_format_float() writes, NUL included. */
#define LP_FLOAT_MAX 32

/* Starts empty; nothing allocated until something is written. */
void lp_init(struct lp_buf *b);
/* Frees the data and starts empty again. */
void lp_free(struct lp_buf *b);

/* Hands the text over: returns data (caller frees; NULL if nothing was
 * written) with its length and point count, and leaves b empty. */
char *lp_take(struct lp_buf *b, size_t *len, size_t *lines);

/* Point building. lp_tag skips an empty value (InfluxDB refuses them).
 * lp_field_float skips a non-finite value (line protocol has none).
 * lp_end writes the timestamp and returns 0, or, if the point got no field,
 * removes it and returns CH_EINVAL. */
void lp_begin(struct lp_buf *b, const char *measurement);
void lp_tag(struct lp_buf *b, const char *key, const char *value);
void lp_field_float(struct lp_buf *b, const char *key, double v);
void lp_field_int(struct lp_buf *b, const char *key, int64_t v);
void lp_field_bool(struct lp_buf *b, const char *key, bool v);
void lp_field_str(struct lp_buf *b, const char *key, const char *v);
int lp_end(struct lp_buf *b, int64_t ts_ms);

/* Writes v (finite) as %.15g, or %.16g / %.17g if that is what it takes to
 * parse back to v exactly; at most LP_FLOAT_MAX bytes. Returns the length. */
size_t lp_format_float(char out[LP_FLOAT_MAX], double v);

/* One point per reading: measurement from the reading, tags device, gateway,
 * quality, room (if any), site; one float field per metric; the reading's ts.
 * Returns the number of points written. */
size_t lp_telemetry(struct lp_buf *b, const struct ch_telemetry *t);

/* One carehub_status point: tags gateway, site; fields boot_id and version
 * (when present) and online; at the status ts, or at ts_ms when it has none
 * (the will). Returns 0. */
int lp_status(struct lp_buf *b, const struct ch_status *s, int64_t ts_ms);

/* One carehub_device point per device of a birth's inventory: tags site,
 * gateway, device; fields profile, bus (room when given); at the status ts
 * (ts_ms when it has none). The first one of a device says since when it
 * exists (the summary's device online rate). Returns the points added. */
size_t lp_inventory(struct lp_buf *b, const struct ch_status *s, int64_t ts_ms);

/* One point in measurement "alarm" for an alarm transition (a decoded,
 * hence valid, alert):
 *   tags    alarm_id bed device event gateway priority resident room rule
 *           site state (empty ones left out)
 *   fields  value (float, only with has_value), metric (string), escalation
 *           (integer), latched (boolean), message (string), raised_ms,
 *           acked_ms, cleared_ms, shelved_until_ms (integers, only when not
 *           0), by (string), group (string); empty strings left out
 *   time    ts_ms
 * Event and state are tags so that two transitions of one alarm in the same
 * millisecond (raise, then escalate at once) stay two points, while the same
 * transition delivered twice (QoS 1) makes the same series and time, and
 * the same text: it overwrites itself. Returns 0. */
int lp_alert(struct lp_buf *b, const struct ch_alert *a);

#endif
