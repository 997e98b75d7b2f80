/* Reading InfluxDB for the API: InfluxQL over HTTP (POST /query, epoch=ms),
 * for InfluxDB 1.x (database, basic auth) and 2.x (its 1.x-compatible
 * /query, the bucket as database, Authorization: Token).
 *
 * Nothing a client sends is pasted into a query: queries are built with
 * struct qb, whose qb_str() writes a quoted string literal ('...' with \ and
 * ' escaped), qb_regex_prefix() an anchored regular expression with every
 * metacharacter escaped, and qb_ident() a double-quoted identifier. The API
 * validates ids before they get here as well (defence in depth). */
#ifndef CAREHUB_INFLUXQ_H
#define CAREHUB_INFLUXQ_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hubcfg_influx;

/* A query being built: a growable string. */
struct qb {
    char *s;
    size_t len, cap;
};

void qb_init(struct qb *b);
void qb_free(struct qb *b);
/* Appends trusted text (the query's own words), printf style. */
void qb_add(struct qb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends v as a string literal. */
void qb_str(struct qb *b, const char *v);
/* Appends v as an identifier ("..."). */
void qb_ident(struct qb *b, const char *v);
/* The retention policies of InfluxDB 1.x the hub writes to when
 * influx.retention.raw is set (retention.h): the readings, and their hourly
 * history. Everything else is in the database's default policy. */
#define INFLUX_RP_RAW    "raw"
#define INFLUX_RP_HOURLY "hourly"

/* Whether measurement is one the hub keeps in the database's default policy
 * whatever the readings' retention (alarm transitions, statuses, inventories,
 * the audit, the summary's figures and marks, the history's progress). */
bool influx_kept_long(const char *measurement);

/* Appends the readings' measurement as a FROM source (NULL: a regular
 * expression matching every measurement): in the policy "raw" when c has
 * one for them, unless it is one kept long (influx_kept_long). */
void qb_readings(struct qb *b, const struct hubcfg_influx *c, const char *measurement);
/* Appends /^<prefix>/ with prefix's characters escaped. */
void qb_regex_prefix(struct qb *b, const char *prefix);
/* Appends a time literal: <ms>ms. */
void qb_time(struct qb *b, int64_t ms);

struct influxq {
    const struct hubcfg_influx *cfg; /* borrowed */
    int64_t timeout_ms;
    const atomic_bool *cancel; /* optional: set, a query under way is abandoned (CH_ERETRY) */
};

/* Runs q (one or more statements separated by ';'). Returns 0 with *results
 * (caller decrefs): the "results" array, one object per statement, each with
 * "series" (absent when nothing matched). Returns CH_ERETRY when InfluxDB
 * cannot be reached or timed out, CH_EREJECTED when it answered with an
 * error (in err). */
int influxq_run(const struct influxq *q, const char *query, json_t **results, char *err,
                size_t errn);

/* influxq_run of the query built in b, which it frees. */
int influxq_run_qb(const struct influxq *q, struct qb *b, json_t **results, char *err, size_t errn);

/* The series of statement i of results (borrowed; NULL when none, which
 * json_array_foreach and json_array_size take as empty). */
json_t *influxq_series(json_t *results, size_t i);

/* Index of column name in a series' "columns", or -1. */
int influxq_col(json_t *series, const char *name);

#endif
