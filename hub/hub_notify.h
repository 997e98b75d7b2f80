/* care-hub's notifier: alarms of every site this hub ingests, told to
 * people off site (a chain's duty manager, an operator's on-call phone) by
 * the hub.yaml notify: section, the same channels, rosters and routes as a
 * gateway's (common/notify.h).
 *
 * Which side sends what is the configuration's choice: a gateway tells the
 * carers in its building (level 0 and 1, even with the WAN down), the hub
 * the managers (level 2) — route each level on one side only, or a phone
 * gets it twice. Rosters and the times in messages are in
 * notify_timezone (the sites' zone; default the hub's). Each stored alert (ingest's hook) whose
 * event a route takes (raise, escalate, ack, clear) and that is no older than notify_max_age (a
 * gateway's backlog after an outage is history, not news) goes to the notifier, with the names the
 * gateway sent. Each final outcome is stored as a "notified" transition of the alarm (by: who,
 * message: what came of it), beside the gateway's, so the hub's history shows it.
 *
 * In a shared subscription every alert reaches one hub of the group; the
 * notifier's state (pending deliveries, what was delivered) is in this
 * hub's spool directory. Thread-safe. */
#ifndef CAREHUB_HUB_NOTIFY_H
#define CAREHUB_HUB_NOTIFY_H

#include "hubcfg.h"
#include "ingest.h"

struct hub_notify;

/* NULL when cfg has no notify: section, or on failure (logged). in: where
 * the outcomes are stored (borrowed; must outlive it). */
struct hub_notify *hub_notify_open(const struct hubcfg *cfg, struct ingest *in);

/* ingest_alert_fn: one stored alert. */
void hub_notify_alert(void *hn, const struct ch_alert *a, int64_t now_ms);

/* Stops the notifier (what it has not sent stays in its directory). */
void hub_notify_close(struct hub_notify *hn);

#endif
