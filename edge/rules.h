/* Care rules: when is a (rule, device) alarm condition active?
 *
 * Rules come from the site model (edge/site_model.h: struct rule_cfg, all of
 * c->all_rules). A rule applies to each enabled device its select matches
 * whose profile has every metric the rule names (a CO2 rule selecting kind
 * environment skips a temperature-only meter). For each such pair the
 * engine keeps the condition state and tells the alarm module (alarm.h) when
 * it changes, and once at start with the first definite "clear" (so an alarm
 * restored from the state file learns its condition is gone).
 *
 * Expressions (`when`, `clear`): comparisons of metrics with numbers or
 * $params, combined with and / or / not and parentheses:
 *     co2 > 1000            hr < $hr_low or hr > $hr_high     in_bed == 0
 *     rise(temperature, 10m) >= 5       avg(pm25, 24h) > 50   fall(x, 5m) > 3
 * Operators: < <= > >= == !=; `not` binds tighter than `and`, `and` than
 * `or`. Functions over a metric's recent history (1 s to 7 days):
 * rise(m, d) / fall(m, d) (latest value minus the lowest of the last d /
 * highest minus latest; needs two samples), avg(m, d) (mean over the last d;
 * needs d of data). History is kept only for metrics such functions name, in
 * at most ~1440 buckets (avg(pm25, 24h): one-minute buckets), so precision is
 * d / 1440 (at least 1 s).
 * A comparison whose metric has no value yet (or a function without enough
 * history) is unknown: three-valued logic (false and unknown = false, true or
 * unknown = true, not unknown = unknown). Only a true `when` raises and only
 * a true clear condition clears: an unknown keeps the current state.
 * $name takes the value from the resident of the device (resident params),
 * else from the rule's params; a $name defined in neither is a config error.
 *
 * Timing, per (rule, device). Every duration below (for, clear_for, no_data,
 * the rise/fall/avg windows) is measured on the monotonic clock (the mono_ms
 * of the struct ch_time the caller passes), so a wall-clock step, either
 * way, neither fires nor holds back anything; only `window` reads the wall
 * clock (wall_ms), since "22:00-06:00" is a time of day:
 * - for (on-delay): the condition must hold continuously this long; it
 *   restarts when the condition drops before the delay.
 * - clear / deadband: without `clear`, the alarm clears when the negated
 *   condition holds with every comparison past its limit by deadband
 *   (co2 > 1000 with deadband 100 clears at co2 <= 900).
 * - clear_for (off-delay): clear must hold this long before the alarm module
 *   hears of it (chatter damping).
 * - no_data (stale): active when the device sent nothing for this long
 *   (counted from the engine's first feed or tick); clears at its next
 *   reading. A rule may have only no_data; with when as well, either raises.
 *   Readings of quality bad are not data (neither values nor freshness).
 * - history for rise/fall/avg is bucketed by the monotonic time a reading
 *   arrives, not by its wall-clock ts: after the clock is set back, a
 *   reading whose ts is older than the last one's still counts, in order.
 * - window "HH:MM-HH:MM" in the site's time zone (c->timezone, else the
 *   system's), may cross midnight: outside it the condition is false and
 *   clear (an unlatched alarm returns to normal at the window's end).
 * - message: {value} {metric} {device} {room} {bed} {resident} are filled in
 *   ({metric} is "no data" for stale data); default: the description.
 *
 * Rule problems are configuration errors reported with cfg_report() on the
 * rule's node (file, line, key): bad expression (with the column in the
 * text), unknown metric for every profile the rule selects, unknown $param,
 * bad window, neither when nor no_data, a select naming unknown devices,
 * profiles, residents or rooms. */
#ifndef CAREHUB_RULES_H
#define CAREHUB_RULES_H

#include "codec.h"
#include "site_model.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

struct rules;
struct alarms;

/* Checks every rule of c (c->all_rules against c's profiles, devices and
 * residents), reporting each problem. Returns the number of errors. */
int rules_check(const struct site_config *c);

/* Compiles the rules of c (checked) for its devices and registers every
 * (rule, device) alarm with am (alarms_register). c and am are borrowed for
 * the engine's lifetime (destroy the engine before closing am); am may be
 * NULL (conditions are evaluated and go nowhere: benchmarks). Sets TZ to
 * c->timezone (process-wide) when it is not empty. Returns 0 or CH_ECONFIG
 * (rule errors, logged). */
int rules_create(const struct site_config *c, struct alarms *am, struct rules **out);
void rules_destroy(struct rules *r);

/* A reading of device dev (index into c->devices) arriving at now
 * (ch_time_now(): now.mono_ms times it, now.wall_ms labels the transitions
 * it causes and decides windows; reading->ts_ms is not looked at). The
 * reading is borrowed. Thread-safe (bus threads call it concurrently): one
 * mutex, held while the alarm module is told, so the alarm sink may run on
 * this thread with the engine locked: a sink must not call rules_*(). */
void rules_feed(struct rules *r, size_t dev, const struct ch_reading *reading, struct ch_time now);

/* Time passing: on-delays, off-delays, stale data, windows. Call at least
 * once a second, with ch_time_now(). */
void rules_tick(struct rules *r, struct ch_time now);

/* (rule, device) pairs being watched. */
size_t rules_instances(const struct rules *r);

#endif
