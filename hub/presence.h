/* Which gateways are online, from their status messages (birth and will).
 *
 * One entry per site/gateway seen: online, software version, the ts of the
 * last status applied, and when telemetry last arrived. Each online/offline
 * transition is logged once: "[presence:site/gw] online (version 0.1.0)".
 * A status older than the one already applied (its ts is smaller; a will has
 * no ts and always applies) does not change the state: retained messages
 * replayed on resubscribe cannot undo newer news. Thread-safe. */
#ifndef CAREHUB_PRESENCE_H
#define CAREHUB_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

struct ch_status;
struct presence;

/* Returns an empty map; caller frees with presence_free. Aborts on OOM. */
struct presence *presence_new(void);
void presence_free(struct presence *p);

/* Applies a decoded status (borrowed) received at now_ms (wall clock). */
void presence_status(struct presence *p, const struct ch_status *s, int64_t now_ms);

/* Notes telemetry from site/gateway at now_ms; does not change online state. */
void presence_telemetry(struct presence *p, const char *site, const char *gateway, int64_t now_ms);

/* Number of gateways whose last status said online. */
size_t presence_online(struct presence *p);

#endif
