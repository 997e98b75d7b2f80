/* The site registry: which gateways exist, which devices each may send
 * readings for, and how fast. One gateway never degrades another site.
 *
 * INVENTORY. A gateway's retained birth (status, online) lists its devices;
 * that list is its declared inventory, and the registry refuses readings of
 * any other device (invented ids would otherwise grow InfluxDB's `device`
 * tag until its max-values-per-tag limit refuses every new device of every
 * site). The gateway's own id is always declared (care-edge's edge_gateway
 * reading). A device left out of a newer birth stays declared for
 * inventory_grace (the backlog of a reloaded gateway still holds its
 * readings); at most max_devices per gateway, the newest birth's first.
 * An operator's file (ingest.registry) may list the gateways that exist and,
 * per gateway, its devices: then a gateway not listed is not admitted at
 * all, and a listed device list is the inventory whatever births say.
 *
 * Three verdicts per reading, and what they mean for "delivered means
 * stored" (acks.h):
 *   ACCEPT  stored, then acknowledged.
 *   REFUSE  the gateway's birth (or the file) declares an inventory without
 *           the device: not stored, but acknowledged as handled all the same
 *           (it is rejected, not lost: sending it again would be refused
 *           again, forever), counted (readings_refused) and logged once per
 *           device, naming at most LOG_DEVICES devices per gateway.
 *   DEFER   no birth seen yet (a hub just started, a birth taken by another
 *           hub of a shared subscription and not yet seen on the view): up to
 *           devices_before_birth distinct devices pass, readings of more are
 *           neither stored nor acknowledged, so the gateway sends them again
 *           once its birth is known (counted readings_deferred). A reading is
 *           refused only when the registry knows the inventory.
 *
 * QUOTA. Each gateway has a token bucket of `rate` readings/s holding at most
 * `burst`. A telemetry message is admitted while the bucket is not empty and
 * then costs its readings (the bucket may go below zero: a 5,000-reading
 * message is admitted whole, and the gateway waits for the refill). A message
 * arriving with the bucket empty is shed before it is even parsed: not stored
 * and not acknowledged, so the gateway's spool keeps it and sends it again
 * (delivered means stored makes shedding lossless), counted (messages_shed)
 * and logged once per episode. One gateway's flood costs the hub little more
 * than reading it off the socket, and the rest of the hub's capacity is the
 * other sites'.
 *
 * Memory is bounded: at most MAX_GATEWAYS gateways (beyond, new ones are
 * treated as unregistered), max_devices devices and a few small sets per
 * gateway. Thread-safe (one lock). */
#ifndef CAREHUB_REGISTRY_H
#define CAREHUB_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ch_status;
struct ch_telemetry;
struct hubcfg_ingest;
struct lp_buf;
struct registry;

/* Devices refused by name in the log, per gateway; beyond, counted only. */
#define REGISTRY_LOG_DEVICES 64
/* Gateways the registry follows; more are not admitted (logged). */
#define REGISTRY_MAX_GATEWAYS 65536

/* A registry with cfg's limits (borrowed until registry_free). When
 * cfg->registry names a file it is read (registry_load_file); returns NULL
 * if that fails (reported on stderr). Caller frees with registry_free. */
struct registry *registry_new(const struct hubcfg_ingest *cfg);
void registry_free(struct registry *r);

/* Reads the operator's file again (SIGHUP). On an error in the file, nothing
 * changes (reported on stderr, logged). Returns 0, CH_ECONFIG or -errno. */
int registry_load_file(struct registry *r, const char *path);

/* A status message (borrowed): a birth newer than the last one applied (its
 * ts) replaces the gateway's inventory as described above; a will changes
 * nothing. Both paths that see statuses call it (ingest, and the view of
 * every gateway in a shared subscription); the second copy is a no-op. */
void registry_status(struct registry *r, const struct ch_status *s);

enum registry_admit { REGISTRY_ADMIT, REGISTRY_SHED, REGISTRY_UNREGISTERED };

/* Before a telemetry message of site/gateway is parsed, at monotonic time
 * now_ms: REGISTRY_ADMIT, REGISTRY_SHED (its bucket is empty) or
 * REGISTRY_UNREGISTERED (the file does not list it, or too many gateways).
 * Counts and logs the last two. */
enum registry_admit registry_admit(struct registry *r, const char *site, const char *gateway,
                                   int64_t now_ms);

enum registry_verdict { REGISTRY_ACCEPT = 0, REGISTRY_REFUSE = 1, REGISTRY_DEFER = 2 };

/* The readings of an admitted message (borrowed): fills verdict[i] for each
 * of t->n_readings, charges them to the gateway's bucket, counts and logs the
 * refused and deferred ones. */
void registry_check(struct registry *r, const struct ch_telemetry *t, uint8_t *verdict);

/* A telemetry message of site/gateway shed for want of room (the ingest
 * queue, ingestq.h): counted with those over quota (messages_shed). */
void registry_shed(struct registry *r, const char *site, const char *gateway);

/* Notes that n readings of site/gateway were stored (its carehub_ingest
 * `readings` count). */
void registry_stored(struct registry *r, const char *site, const char *gateway, size_t n);

struct registry_stats {
    uint64_t readings_refused;      /* of undeclared devices, acknowledged */
    uint64_t readings_deferred;     /* before a birth, beyond devices_before_birth */
    uint64_t messages_shed;         /* over a gateway's quota, not acknowledged */
    uint64_t messages_unregistered; /* of gateways the file does not list */
    uint64_t gateways;              /* followed */
    uint64_t gateways_shedding;     /* over their quota now (shed in the last 10 s) */
};

void registry_stats(struct registry *r, struct registry_stats *out);

/* One carehub_ingest point per gateway whose counts changed since the last
 * call: tags gateway, hub, site; fields readings, readings_refused,
 * readings_deferred, messages_shed (integers since the hub started),
 * devices (declared now), born (a birth seen), shedding (over its quota
 * now); at ts_ms. Returns the number of points written to b. */
size_t registry_report(struct registry *r, struct lp_buf *b, const char *hub, int64_t ts_ms);

#endif
