/* Years of operation in InfluxDB 1.x: what is kept how long, and the
 * history that outlives the readings (influx.retention; README, "InfluxDB
 * for years").
 *
 * A site of 120 residents sends about 15 million readings a day. With
 * influx.retention.raw set, the database has three retention policies:
 *   raw      the readings (and the gateways' and hubs' own figures) at full
 *            resolution, for retention.raw (30 days in the shipped file);
 *   hourly   per hour, device and tag set, the mean, minimum and maximum of
 *            every numeric field of every measurement of raw (fields
 *            mean_<f>, min_<f>, max_<f>), for retention.hourly (0: forever);
 *   the database's default policy (autogen): alarm transitions, gateway
 *            statuses, the audit, the summary's kept figures (rollup.h), the
 *            stale marks, and the history's own progress - kept forever.
 *
 * The hourly history is made by care-hub, not by InfluxDB's continuous
 * queries: a continuous query sees only the last interval or two, and a
 * gateway that comes back after a day offline sends its spool then. The
 * keeper thread, every retention.interval, brings every day in raw up to
 * the last hour that ended rollup_after ago, one hour of every site per
 * query (SELECT mean(*), min(*), max(*) INTO "hourly".:MEASUREMENT FROM
 * every measurement of "raw" ... GROUP BY time(1h), *); it keeps how far each UTC day is
 * done in carehub_downsample (at the day's start: through_ms, and basis,
 * the newest stale mark of the day it saw before reading). A backlog for a
 * done hour writes a new stale mark behind its readings (rollup.h), so the
 * day is made again: the same points, overwritten. The keeper also has
 * the API keep each site's day figures (api_keep_figures) while its
 * readings are still in raw, so that a summary of any range, however old,
 * answers from them.
 *
 * Several hubs (a shared group) each run the keeper: the work is done more
 * than once, and the result is the same. */
#ifndef CAREHUB_RETENTION_H
#define CAREHUB_RETENTION_H

#include <stddef.h>
#include <stdint.h>

struct hubcfg;
struct hubcfg_influx;
struct influx;
struct api;
struct retention;

/* Creates the policies raw and hourly on c's database, or changes their
 * duration to c's (InfluxDB then drops what is older). Returns 0; CH_ERETRY
 * when InfluxDB cannot be reached; CH_EREJECTED when it refused (err). */
int retention_setup(const struct hubcfg_influx *c, char *err, size_t errn);

/* Starts the keeper (nothing to do, NULL, when cfg has no retention.raw).
 * cfg and writer (its progress points) are borrowed until retention_stop;
 * api may be NULL (no day figures kept: there is no summary to answer). */
struct retention *retention_start(const struct hubcfg *cfg, struct influx *writer, struct api *api);

/* Every hour before this (ms) is in the hourly history, as far as this
 * process knows; 0 while it does not know yet. Thread-safe; r may be NULL. */
int64_t retention_through(const struct retention *r);

/* Stops the keeper (within a query's time) and frees it. r may be NULL. */
void retention_stop(struct retention *r);

#endif
