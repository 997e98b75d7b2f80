#include "lineproto.h"
#include "codec.h"
#include "err.h"
#include "util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_NONE, ST_TAGS, ST_FIELDS };

void lp_init(struct lp_buf *b)
{
    memset(b, 0, sizeof *b);
}

void lp_free(struct lp_buf *b)
{
    free(b->data);
    lp_init(b);
}

char *lp_take(struct lp_buf *b, size_t *len, size_t *lines)
{
    char *d = b->data;
    *len = b->len;
    *lines = b->lines;
    lp_init(b);
    return d;
}

static void reserve(struct lp_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->data = ch_xrealloc(b->data, cap);
    b->cap = cap;
}

static void put(struct lp_buf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void putc_(struct lp_buf *b, char c)
{
    put(b, &c, 1);
}

/* Writes s with a backslash before each byte in special (and before a
 * backslash, so that a value ending in one cannot escape the separator that
 * follows); drops CR and LF, which no line protocol escape can carry. */
static void put_escaped(struct lp_buf *b, const char *s, const char *special)
{
    for (; *s; s++) {
        if (*s == '\n' || *s == '\r')
            continue;
        if (*s == '\\' || strchr(special, *s))
            putc_(b, '\\');
        putc_(b, *s);
    }
}

#define MEASUREMENT_SPECIAL ", "
#define KEY_SPECIAL         ",= "

void lp_begin(struct lp_buf *b, const char *measurement)
{
    b->mark = b->len;
    b->state = ST_TAGS;
    put_escaped(b, measurement, MEASUREMENT_SPECIAL);
}

void lp_tag(struct lp_buf *b, const char *key, const char *value)
{
    if (!value[0])
        return;
    putc_(b, ',');
    put_escaped(b, key, KEY_SPECIAL);
    putc_(b, '=');
    put_escaped(b, value, KEY_SPECIAL);
}

static void field_key(struct lp_buf *b, const char *key)
{
    putc_(b, b->state == ST_FIELDS ? ',' : ' ');
    b->state = ST_FIELDS;
    put_escaped(b, key, KEY_SPECIAL);
    putc_(b, '=');
}

size_t lp_format_float(char out[LP_FLOAT_MAX], double v)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, LP_FLOAT_MAX, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return (size_t)n;
}

void lp_field_float(struct lp_buf *b, const char *key, double v)
{
    if (!isfinite(v))
        return;
    char num[LP_FLOAT_MAX];
    size_t n = lp_format_float(num, v);
    field_key(b, key);
    put(b, num, n);
}

void lp_field_int(struct lp_buf *b, const char *key, int64_t v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%" PRId64 "i", v);
    field_key(b, key);
    put(b, num, (size_t)n);
}

void lp_field_bool(struct lp_buf *b, const char *key, bool v)
{
    field_key(b, key);
    put(b, v ? "true" : "false", v ? 4 : 5);
}

void lp_field_str(struct lp_buf *b, const char *key, const char *v)
{
    field_key(b, key);
    putc_(b, '"');
    for (; *v; v++) {
        if (*v == '\n' || *v == '\r')
            continue;
        if (*v == '"' || *v == '\\')
            putc_(b, '\\');
        putc_(b, *v);
    }
    putc_(b, '"');
}

int lp_end(struct lp_buf *b, int64_t ts_ms)
{
    bool any = b->state == ST_FIELDS;
    b->state = ST_NONE;
    if (!any) {
        b->len = b->mark;
        if (b->data)
            b->data[b->len] = '\0';
        return CH_EINVAL;
    }
    char num[32];
    int n = snprintf(num, sizeof num, " %" PRId64 "\n", ts_ms);
    put(b, num, (size_t)n);
    b->lines++;
    return 0;
}

size_t lp_telemetry(struct lp_buf *b, const struct ch_telemetry *t)
{
    size_t points = 0;
    for (size_t i = 0; i < t->n_readings; i++) {
        const struct ch_reading *r = &t->readings[i];
        lp_begin(b, r->measurement);
        lp_tag(b, "device", r->device);
        lp_tag(b, "gateway", t->gateway);
        lp_tag(b, "quality", ch_quality_name(r->quality));
        lp_tag(b, "room", r->room);
        lp_tag(b, "site", t->site);
        for (size_t j = 0; j < r->n_metrics; j++)
            lp_field_float(b, r->metrics[j].name, r->metrics[j].value);
        /* the reading's own sequence number: completeness can be checked
         * from what is stored, by any hub */
        lp_field_int(b, "seq", (int64_t)(t->seq + i));
        if (lp_end(b, r->ts_ms) == 0)
            points++;
    }
    return points;
}

int lp_status(struct lp_buf *b, const struct ch_status *s, int64_t ts_ms)
{
    lp_begin(b, "carehub_status");
    lp_tag(b, "gateway", s->gateway);
    lp_tag(b, "site", s->site);
    if (s->boot_id[0])
        lp_field_str(b, "boot_id", s->boot_id);
    lp_field_bool(b, "online", s->online);
    if (s->version[0])
        lp_field_str(b, "version", s->version);
    return lp_end(b, s->ts_ms ? s->ts_ms : ts_ms);
}

size_t lp_inventory(struct lp_buf *b, const struct ch_status *s, int64_t ts_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_devices; i++) {
        const struct ch_device_info *d = &s->devices[i];
        lp_begin(b, "carehub_device");
        lp_tag(b, "device", d->id);
        lp_tag(b, "gateway", s->gateway);
        lp_tag(b, "site", s->site);
        lp_field_str(b, "bus", d->bus);
        lp_field_str(b, "profile", d->profile);
        if (d->room[0])
            lp_field_str(b, "room", d->room);
        if (d->name[0])
            lp_field_str(b, "name", d->name);
        if (d->room_name[0])
            lp_field_str(b, "room_name", d->room_name);
        if (s->site_name[0])
            lp_field_str(b, "site_name", s->site_name);
        if (lp_end(b, s->ts_ms ? s->ts_ms : ts_ms) == 0)
            n++;
    }
    return n;
}

int lp_alert(struct lp_buf *b, const struct ch_alert *a)
{
    lp_begin(b, "alarm");
    lp_tag(b, "alarm_id", a->alarm_id);
    lp_tag(b, "bed", a->bed);
    lp_tag(b, "device", a->device);
    lp_tag(b, "event", ch_alarm_event_name(a->event));
    lp_tag(b, "gateway", a->gateway);
    lp_tag(b, "kind", a->kind);
    lp_tag(b, "priority", ch_priority_name(a->priority));
    lp_tag(b, "resident", a->resident);
    lp_tag(b, "room", a->room);
    lp_tag(b, "rule", a->rule);
    lp_tag(b, "site", a->site);
    lp_tag(b, "state", ch_alarm_state_name(a->state));
    if (a->has_value)
        lp_field_float(b, "value", a->value);
    if (a->metric[0])
        lp_field_str(b, "metric", a->metric);
    /* always there, so the point always has a field */
    lp_field_int(b, "escalation", a->escalation);
    lp_field_bool(b, "latched", a->latched);
    if (a->message[0])
        lp_field_str(b, "message", a->message);
    if (a->raised_ms)
        lp_field_int(b, "raised_ms", a->raised_ms);
    if (a->acked_ms)
        lp_field_int(b, "acked_ms", a->acked_ms);
    if (a->cleared_ms)
        lp_field_int(b, "cleared_ms", a->cleared_ms);
    if (a->shelved_until_ms)
        lp_field_int(b, "shelved_until_ms", a->shelved_until_ms);
    if (a->by[0])
        lp_field_str(b, "by", a->by);
    if (a->group[0])
        lp_field_str(b, "group", a->group);
    /* the gateway's alert number (not "seq": that is a reading's number, and
     * completeness is counted over every measurement holding it) */
    if (a->seq)
        lp_field_int(b, "alert_seq", (int64_t)a->seq);
    /* display names people read, any UTF-8: fields, not tags (they change
     * with the configuration; the ids are what a series is) */
    if (a->site_name[0])
        lp_field_str(b, "site_name", a->site_name);
    if (a->room_name[0])
        lp_field_str(b, "room_name", a->room_name);
    if (a->bed_name[0])
        lp_field_str(b, "bed_name", a->bed_name);
    if (a->resident_name[0])
        lp_field_str(b, "resident_name", a->resident_name);
    if (a->device_name[0])
        lp_field_str(b, "device_name", a->device_name);
    if (a->located_ms)
        lp_field_int(b, "located_ms", a->located_ms);
    return lp_end(b, a->ts_ms);
}
