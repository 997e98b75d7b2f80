/* Care rules: when is a (rule, device) alarm condition active?
 *
 * Rules come from the site model (drivers/model.h: struct rule_cfg, all of
 * c->all_rules). A rule applies to each device its select matches. For each
 * such pair the engine keeps the condition state and tells the alarm module
 * (alarm.h) when it changes.
 *
 * Expressions (`when`, `clear`): comparisons of metrics with numbers or
 * $params, combined with and / or / not and parentheses:
 *     co2 > 1000            hr < $hr_low or hr > $hr_high     in_bed == 0
 *     rise(temperature, 10m) >= 5       avg(pm25, 24h) > 50   fall(x, 5m) > 3
 * Operators: < <= > >= == !=. Functions over a metric's recent history:
 * rise(m, d) / fall(m, d) (increase / decrease of m over the last d), avg(m, d)
 * (mean over the last d; needs d of data, else not true). A metric with no
 * value yet makes its comparison false.
 * $name takes the value from the resident of the device (resident params),
 * else from the rule's params; a $name defined in neither is a config error.
 *
 * Timing, per (rule, device), all on the caller's clock:
 * - for (on-delay): the condition must hold continuously this long; it
 *   restarts when the condition drops before the delay.
 * - clear / deadband: without `clear`, the alarm clears when the negated
 *   condition holds with every comparison past its limit by deadband
 *   (co2 > 1000 with deadband 100 clears at co2 <= 900).
 * - clear_for (off-delay): clear must hold this long before the alarm module
 *   hears of it (chatter damping).
 * - no_data (stale): active when the device sent nothing for this long;
 *   clears at its next reading. A rule may have only no_data.
 * - window "HH:MM-HH:MM" in the site's time zone (c->timezone, else the
 *   system's), may cross midnight: outside it the condition is false.
 *
 * Rule problems are configuration errors reported with cfg_report() on the
 * rule's node (file, line, key): bad expression (with the column in the
 * text), unknown metric for every profile the rule selects, unknown $param,
 * bad window, neither when nor no_data, a select naming unknown devices,
 * profiles, residents or rooms. */
#ifndef CAREHUB_RULES_H
#define CAREHUB_RULES_H

#include "codec.h"
#include "model.h"

#include <stddef.h>
#include <stdint.h>

struct rules;
struct alarms;

/* Checks every rule of c (c->all_rules against c's profiles, devices and
 * residents), reporting each problem. Returns the number of errors. */
int rules_check(const struct site_config *c);

/* Compiles the rules of c (checked) for its devices. c and am are borrowed
 * for the engine's lifetime. Returns 0 or CH_ECONFIG. */
int rules_create(const struct site_config *c, struct alarms *am, struct rules **out);
void rules_destroy(struct rules *r);

/* A reading of device dev (index into c->devices) at now_ms. Thread-safe
 * (bus threads call it concurrently). */
void rules_feed(struct rules *r, size_t dev, const struct ch_reading *reading, int64_t now_ms);

/* Time passing: on-delays, off-delays, stale data, windows. Call at least
 * once a second. */
void rules_tick(struct rules *r, int64_t now_ms);

/* (rule, device) pairs being watched. */
size_t rules_instances(const struct rules *r);

#endif
