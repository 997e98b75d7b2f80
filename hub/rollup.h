/* The summary's figures, kept in InfluxDB per UTC day and hour, and the
 * stale marks that say when kept figures no longer hold.
 *
 * Compliance, device online rate and completeness read every reading of the
 * range: over a month of a large site, minutes of InfluxDB. They are sums,
 * so they are kept per UTC day and hour: the figures of [from, to) are its
 * whole days, then the whole hours at its ends, each read from its kept
 * figures (measurement carehub_rollup: tags site, span (day or hour),
 * fields data (the figures as JSON), key (what they were computed with),
 * basis, computed_ms; at the span's start) or read (a day in one request,
 * the hours of a part of a day together in one) and kept once the span
 * ended rollup_after ago; and the minutes at the ends, read now. A reading that
 * arrives later for a kept hour (a backlog) marks its day stale: ingest
 * writes a carehub_rollup_stale point for the day with a new random mark,
 * behind the reading's points (rollup_mark_stale). Kept figures record the day's
 * mark seen before the span was read (basis) and are used only while the
 * mark is still that one: a backlog whose mark is visible has its points in
 * InfluxDB already, and one that lands later changes the mark. Any hub
 * computes and keeps them; two doing it at once write the same point.
 * With influx.retention.raw (retention.h), a span that starts before the
 * raw policy's horizon has lost readings: its kept figures are used as they
 * are (whatever limits or mark they were computed with), and figures
 * computed for it now are not kept; the keeper keeps every day's figures
 * while its readings are there.
 *
 * The figures of a window, as JSON:
 *   {"env": {"<metric>|<room>": [samples, within]},
 *    "dev": {"<gateway>/<device>": intervals with a reading},
 *    "gw":  {"<gateway>": [readings, lowest seq, highest seq]}} */
#ifndef CAREHUB_ROLLUP_H
#define CAREHUB_ROLLUP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct api;
struct ch_telemetry;
struct lp_buf;

/* Adds to b one carehub_rollup_stale point (tag site, fields mark (a new
 * random id) and marked_ms = now_ms, at the day's start) per day of t's
 * readings whose hour may be kept already: it ended rollup_after_ms before
 * now_ms. The caller writes b after t's points. Returns the number of points
 * added: 0 (b untouched) with rollup_after_ms 0 (no figures are kept) or
 * when no reading is that old. */
size_t rollup_mark_stale(struct lp_buf *b, const struct ch_telemetry *t, int64_t rollup_after_ms,
                         int64_t now_ms);

/* The figures of site over [from, to) for the API a (its limits,
 * device_timeout, rollup_after; kept figures go out through its writer):
 * whole UTC days and hours from kept figures, the rest read now. Returns 0
 * with *out (caller decrefs), or the query's error (err). */
int rollup_range(struct api *a, const char *site, int64_t from, int64_t to, json_t **out, char *err,
                 size_t errn);

#endif
