/* Which gateways are online, from their status messages (birth and will).
 *
 * One entry per site/gateway seen: online, software version, the ts of the
 * last status applied, and when telemetry last arrived. Each online/offline
 * transition is logged once: "[presence:site/gw] online (version 0.1.0)".
 * A status older than the one already applied (its ts is smaller; a will has
 * no ts and always applies) does not change the state: retained messages
 * replayed on resubscribe cannot undo newer news.
 *
 * It also follows each gateway's reading numbers (telemetry seq: the first
 * reading's number, readings numbered consecutively) and alert numbers (an
 * alert's seq). A jump opens a gap; numbers that arrive later (a backlog
 * replayed behind live data, a QoS 1 redelivery) fill it or count as
 * duplicates. A gap is lost when the gateway says it no longer holds it (its
 * `oldest` number, in births, telemetry and alerts: it keeps every record
 * until a hub acknowledges storing it), reported at once and exactly, from
 * the gateway's first number on. For a gateway that never says (older
 * software), a gap still open after gap_grace_ms without a historical
 * message is reported instead. Each report is a log line naming the range,
 * and counters. presence_save/presence_load keep the numbers across hub
 * restarts. Thread-safe. */
#ifndef CAREHUB_PRESENCE_H
#define CAREHUB_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ch_status;
struct presence;

/* Returns an empty map; caller frees with presence_free. Aborts on OOM. */
struct presence *presence_new(void);
void presence_free(struct presence *p);

/* A presence that follows statuses only (the hub's view of every gateway,
 * whose telemetry another subscription ingests): the numbers a birth
 * declares are not judged there. Call before use. */
void presence_statuses_only(struct presence *p);

/* Applies a decoded status (borrowed) received at now_ms (wall clock). */
void presence_status(struct presence *p, const struct ch_status *s, int64_t now_ms);

enum { PRESENCE_READINGS = 0, PRESENCE_ALERTS = 1 };

/* Notes telemetry from site/gateway at now_ms carrying readings seq ..
 * seq + n - 1; historical says it was replayed from the gateway's spool;
 * oldest (0: not said) is the oldest reading number the gateway still holds.
 * Does not change online state. */
void presence_telemetry(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                        size_t n, bool historical, uint64_t oldest, int64_t now_ms);

/* Notes alert number seq (0: an unnumbered alert, ignored) with the oldest
 * alert number the gateway still holds (0: not said). */
void presence_alert(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                    uint64_t oldest, int64_t now_ms);

struct presence_seq_stats {
    uint64_t gaps_reported;      /* gaps declared lost (readings and alerts) */
    uint64_t readings_missing;   /* readings lost: no one holds them */
    uint64_t readings_pending;   /* readings in gaps still open */
    uint64_t readings_duplicate; /* readings received again */
    uint64_t alerts_missing;     /* alerts lost */
    uint64_t alerts_pending;     /* alerts in gaps still open */
};

/* Writes every gateway's numbers (received, gaps, oldest declared) to path,
 * atomically (a temporary file, fsync, rename), if they changed since the
 * last save. The hub calls it before acknowledging storage: what a gateway
 * frees is then known to have been received. Returns 0 or -errno (logged). */
int presence_save(struct presence *p, const char *path);

/* Reads what presence_save wrote (a missing file is an empty start; a
 * damaged one is logged and ignored). Call before anything else. Returns 0,
 * or CH_EINVAL for a damaged file. */
int presence_load(struct presence *p, const char *path);

/* Reports (and closes) the gaps open longer than grace_ms at now_ms, then
 * fills *out with the totals. */
void presence_check_gaps(struct presence *p, int64_t now_ms, int64_t grace_ms,
                         struct presence_seq_stats *out);

/* One gateway as known from its statuses. */
struct presence_gw {
    char site[65]; /* CH_ID_MAX */
    char gateway[65];
    bool online;
    char version[32];  /* CH_VERSION_MAX */
    int64_t status_ts; /* ts of the newest status applied */
    int64_t last_seen; /* wall ms: now while online, else the last status or telemetry */
    size_t n_devices;  /* in its last birth */
};

/* Every gateway a status was applied for, in no particular order: *out
 * (caller frees) and the count. */
size_t presence_list(struct presence *p, struct presence_gw **out);

/* Number of gateways whose last status said online. */
size_t presence_online(struct presence *p);

#endif
