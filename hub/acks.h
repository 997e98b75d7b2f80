/* Storage acknowledgements to the gateways: "delivered means stored".
 *
 * A gateway keeps every reading and alert in its spool until a hub says it
 * stored it; a broker's PUBACK frees nothing (edge/uplink.c). Ingest notes
 * here the numbers of every message whose points are in the hub's spool
 * (acks_note); the main loop, every ack_interval, takes what was noted
 * (acks_take), makes the spool durable (spool_sync: what was noted was
 * appended before), and publishes one carehub/ack/1 message per gateway on
 * carehub/ack/v1/{site}/{gateway} (outside carehub/v1/, which hubs subscribe
 * to: no hub gets the acks back): the ranges of reading and alert numbers
 * stored since the last one. So a gateway gets at most one small message
 * every ack_interval, whatever its rate, and a million gateways cost a
 * million small messages per interval spread over the hubs, not one per
 * message.
 *
 * Ranges are kept merged (adjacent and overlapping ones join), so a gateway
 * sending in order costs one range per lane. A gateway whose numbers arrive
 * so scattered that more than CH_ACK_MAX_RANGES ranges are open keeps the
 * rest for the next message. Several hubs on a shared subscription each
 * acknowledge what they stored; the gateway frees a record once any ack
 * covers it.
 *
 * Thread-safe: ingest notes on Paho's thread, the main loop takes. */
#ifndef CAREHUB_ACKS_H
#define CAREHUB_ACKS_H

#include "codec.h"

#include <stddef.h>
#include <stdint.h>

struct acks;

enum acks_lane { ACKS_READINGS = 0, ACKS_ALERTS = 1 };

/* An empty set. Caller frees with acks_free. Aborts on OOM. */
struct acks *acks_new(void);
void acks_free(struct acks *a);

/* Notes numbers lo..hi (1 <= lo <= hi <= CH_NUMBER_MAX; others are ignored)
 * of site/gateway (valid ids) as stored. */
void acks_note(struct acks *a, const char *site, const char *gateway, enum acks_lane lane,
               uint64_t lo, uint64_t hi);

/* Moves what was noted into *out (an array, caller frees; n returned), one
 * ch_ack per gateway with at most CH_ACK_MAX_RANGES ranges per lane (what does
 * not fit stays noted for the next take), hub and ts_ms filled in. */
size_t acks_take(struct acks *a, const char *hub, int64_t ts_ms, struct ch_ack **out);

/* Gateways with numbers noted and not taken. */
size_t acks_pending(struct acks *a);

#endif
