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
 * reading's number, readings numbered consecutively). A jump opens a gap;
 * readings that arrive later (a backlog replayed behind live data, a QoS 1
 * redelivery) fill it or count as duplicates. A gap still open after
 * gap_grace_ms without a historical message from that gateway is reported
 * once — a log line naming the missing range, and counters — and closed.
 * Thread-safe. */
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

/* Applies a decoded status (borrowed) received at now_ms (wall clock). */
void presence_status(struct presence *p, const struct ch_status *s, int64_t now_ms);

/* Notes telemetry from site/gateway at now_ms carrying readings seq ..
 * seq + n - 1; historical says it was replayed from the gateway's spool.
 * Does not change online state. */
void presence_telemetry(struct presence *p, const char *site, const char *gateway, uint64_t seq,
                        size_t n, bool historical, int64_t now_ms);

struct presence_seq_stats {
    uint64_t gaps_reported;      /* gaps declared lost */
    uint64_t readings_missing;   /* readings in them */
    uint64_t readings_pending;   /* readings in gaps still open */
    uint64_t readings_duplicate; /* readings received again */
};

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
