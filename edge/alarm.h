/* Alarm life cycle (ISA-18.2 / IEC 62682) for care-edge.
 *
 * An alarm is one (rule, device) pair, id "rule:device". The rules engine
 * (rules.h) says when its condition becomes active or clear; this module
 * keeps the life cycle:
 *
 *   normal --raise--> unack --ack--> acked --clear--> normal
 *                       |                  ^
 *                       +--rtn--> rtn_unack --ack--> normal
 *                       (rtn_unack --raise--> unack: the same occurrence)
 *
 * - latch (rule->latch): the condition clearing does not leave unack; after
 *   ack the alarm goes to normal once the condition is clear (at once if it
 *   already is: ACK with state normal). ch_alert.latched = the rule latches.
 * - escalation: unack for rule->escalate_ms -> ESCALATE (level 1), again
 *   every escalate_ms up to rule->escalate_max; each is a transition. Ack and
 *   return to normal stop it; a re-raise of the same occurrence keeps the
 *   level and restarts the delay.
 * - shelve (with expiry, at most alarms.shelve_max_ms; shelving again moves
 *   the expiry) and out of service suppress an alarm in any state; the
 *   condition is still followed. When they end (UNSHELVE / IN_SERVICE, to
 *   normal) an active condition raises a new occurrence at once (RAISE).
 * - flood: more than alarms.flood_count raises within alarms.flood_window
 *   on the site is a flood: an alert of its own (alarm "flood:<gateway>",
 *   priority high, event FLOOD, then FLOOD_END when the rate is back under
 *   half the limit, checked by alarms_tick); it can be acknowledged (only
 *   that). While it lasts, transitions and snapshots of low-priority alarms
 *   carry group = "flood:<gateway>" so consoles show them as one group.
 *   Every RAISE counts, re-raises of one occurrence too.
 * - chatter damping: the rules engine's clear_for (off-delay): a condition
 *   that clears and comes back within it never reaches this module; and an
 *   alarm that returns to normal unacknowledged and comes back is the same
 *   occurrence (RAISE with the first raised_ms), not a new alarm.
 *
 * Every transition is handed to the sink exactly once, in the order made,
 * with the module's lock released (the sink may call alarms_active(),
 * alarms_history(), even alarms_command()); one thread delivers at a time,
 * so a call may return before another thread has delivered its transition.
 * - the gateway's own alarms (alarms_self): "<rule>:<gateway>", device the
 *   gateway, like the flood alarm; the usual life cycle (not latched, no
 *   escalation): spool-failed (high: the spool cannot write its disk and
 *   keeps data in memory only, or the disk is full; care-edge reports it)
 *   and state-save-failed (medium: the state file below cannot be written
 *   anywhere, so a restart would forget the alarms; raised and cleared here).
 *
 * Durability: the state (every alarm not normal, the flood state, the last
 * 256 transitions) is written to alarms.state_file (write to a temporary
 * file, fsync, rename, fsync the directory) once per call that made
 * transitions, before the sink sees them; at open the file is read back, so
 * a latched SOS is still active after a reboot (alarms whose rule or device
 * left the configuration are dropped with a warning). A damaged state file
 * is reported, kept aside as state_file.bad, and the module starts empty
 * rather than refuse to start. An empty state_file: no durability (tests).
 * When state_file cannot be written (the spool's disk read-only or full, as
 * it usually shares it), the state goes to a fallback in a runtime
 * directory, alarms-<hash of state_file's path>.state in $RUNTIME_DIRECTORY
 * (systemd's RuntimeDirectory=), else /run/carehub, else $TMPDIR or /tmp:
 * it survives a restart of care-edge, not a reboot. Logged once when that
 * begins and once when state_file works again (the fallback is then
 * removed); if neither can be written, state-save-failed is raised. At open
 * the newer of the two (by saved_ms) is loaded.
 *
 * Clocks. Every call takes the time as a struct ch_time (util.h; care-edge
 * passes ch_time_now(), tests a fake clock). Durations run on its mono_ms:
 * escalation delays, shelve expiry, the flood window, how long history is
 * kept; so a wall-clock step, either way, neither fires an escalation early
 * nor holds a shelved alarm hidden an hour longer. wall_ms only labels: a
 * transition's ts_ms, raised_ms, acked_ms, cleared_ms are the wall clock
 * when they happened, and shelved_until_ms (transitions, snapshots) is the
 * wall clock now plus what is left of the shelving. The monotonic clock
 * means nothing after a reboot, so the state file keeps wall-clock times
 * and its own saved_ms: at open, a deadline's time left at the save is
 * carried over, less the downtime as the wall clock tells it, but never
 * more than was left (a clock set back or an RTC-less board booting in 1970
 * does not stretch a timer; a clock far ahead ends shelving and brings
 * escalation due at once: the side that shows alarms rather than hides
 * them). Thread-safe: one mutex. */
#ifndef CAREHUB_ALARM_H
#define CAREHUB_ALARM_H

#include "codec.h"
#include "site_model.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct alarms;

/* Receives each transition (borrowed for the call). */
typedef void (*alarm_sink_fn)(void *arg, const struct ch_alert *transition);

/* Opens the module for site c (borrowed for its lifetime) at now, and
 * loads c->alarms.state_file (its times converted as above). Transitions
 * found pending at load are not replayed to the sink (they were delivered
 * before: the sink's own store, the spool, has them). Returns 0 or a
 * negative error after logging it. */
int alarms_open(const struct site_config *c, alarm_sink_fn sink, void *arg, struct ch_time now,
                struct alarms **out);
void alarms_close(struct alarms *am);

/* Makes the alarm of (rule, dev) known, in normal, so people can shelve it
 * or take it out of service before it ever fires. rules_create() calls it
 * for every (rule, device) instance; repeating it is harmless. */
void alarms_register(struct alarms *am, const struct rule_cfg *rule, const struct device_cfg *dev,
                     const struct resident_cfg *resident);

/* From the rules engine: the condition of rule for device dev (resident may
 * be NULL) is active or not at now. metric/value: what triggered it
 * (metric NULL for stale data); where: the zone the device's latest reading
 * was located in (a wearable's; NULL or "": the device's or resident's
 * configured room is the alarm's room); message: the rule's text, filled
 * in. Repeating the same state is cheap and does nothing (value updates
 * while active are kept for views, not sent). */
void alarms_condition(struct alarms *am, const struct rule_cfg *rule, const struct device_cfg *dev,
                      const struct resident_cfg *resident, bool active, const char *metric,
                      double value, const char *where, const char *message, struct ch_time now);

/* The device dev was located in zone where at now (a reading placed it
 * there): every alarm of it that is not back to normal (a latched SOS whose
 * button is released too) now says where and since when it was seen there
 * (located_ms), in the views at once and in its next transition; no
 * transition of its own. Call it when the zone changes, and now and then
 * while it stays (rules.c: every WHERE_REFRESH_MS). */
void alarms_where(struct alarms *am, const struct device_cfg *dev, const char *where,
                  struct ch_time now);

/* Someone was told of the occurrence (alarm_id, raised_ms) of an alarm, at
 * escalation level: a transition of event notified (ch_alert: by = who,
 * message = what came of it, e.g. "企业微信 ok"), in the history and to
 * the sink, with the alarm's state unchanged. Nothing when the alarm has
 * since been raised again (another occurrence) or is unknown. */
void alarms_note(struct alarms *am, const char *alarm_id, int64_t raised_ms, int level,
                 const char *who, const char *text, struct ch_time now);

/* A configuration reload (SIGHUP), in three steps: alarms_reconfigure(am,
 * c) with the new model (it must stay alive while the module uses it; so
 * must the old one, which alarms of rules that left still point to), then
 * rules_create() for c, whose alarms_register() calls re-point every alarm
 * that still exists, then alarms_reconfigured(): the alarms nobody
 * registered have their condition end at now, as if it had cleared (the
 * usual transitions: a latched one still waits for its acknowledgement). */
void alarms_reconfigure(struct alarms *am, const struct site_config *c);
void alarms_reconfigured(struct alarms *am, struct ch_time now);

/* Escalations, shelving expiry, flood end. Call at least once a second. */
void alarms_tick(struct alarms *am, struct ch_time now);

/* The gateway's own alarms (see the top): id "<name>:<gateway>". */
enum alarm_self {
    ALARM_SELF_SPOOL = 0, /* "spool-failed", high: reported by care-edge */
    ALARM_SELF_STATE,     /* "state-save-failed", medium: raised by this module */
    ALARM_SELF_N
};

/* The condition of one of the gateway's own alarms is active or not at now,
 * with message (borrowed; NULL keeps the last one) for staff. Transitions
 * as alarms_condition(). */
void alarms_self(struct alarms *am, enum alarm_self which, bool active, const char *message,
                 struct ch_time now);

/* Commands from people (console, local MQTT, central hub). by names who
 * ("console:nurse1"). Return 0 on a transition; CH_ENOTFOUND for an unknown
 * alarm id; CH_ESTATE when the command does not apply in the alarm's state
 * (ack of a normal or already acknowledged alarm, ...); CH_EINVAL for a bad
 * duration. cmd->duration_ms (shelve) runs on the monotonic clock from now;
 * cmd->ts_ms is not looked at. */
int alarms_command(struct alarms *am, const struct ch_command *cmd, struct ch_time now);

/* Snapshot of every alarm not in normal (and the flood alarm while it
 * lasts), highest priority first, then oldest raise first. Returns the count;
 * *out is a malloc'ed array (caller frees), NULL when 0. Each element is the
 * alarm as its last transition described it, with value/message current. */
size_t alarms_active(struct alarms *am, struct ch_alert **out);

/* Transitions labelled since_ms or later (wall clock, inclusive), in the
 * order they were made (after the clock was set back, a later transition
 * can carry an earlier label), at most alarms.history_max and made no
 * longer than alarms.history_ms ago (monotonic). Same ownership as
 * alarms_active. */
size_t alarms_history(struct alarms *am, int64_t since_ms, struct ch_alert **out);

/* Priorities of alarms active and unacknowledged now, as a mask of
 * 1 << enum ch_priority; with acknowledged also those acknowledged; only
 * those escalated to min_escalation or further (0: every one). For the
 * annunciators (a sounder at the nurses' station from level 0, one in the
 * manager's office from level 2). */
unsigned alarms_annunciate_mask(struct alarms *am, bool acknowledged, int min_escalation);

struct alarms_stats {
    uint64_t transitions; /* since open */
    uint64_t raised;
    uint64_t floods;
    uint64_t state_errors; /* failed writes of the state file */
    size_t active;         /* not normal now */
    bool state_fallback;   /* the last save went to the fallback, not state_file */
    bool state_unsaved;    /* the last save could not be written anywhere */
};
void alarms_get_stats(struct alarms *am, struct alarms_stats *out);

#endif
