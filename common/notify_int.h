/* The notifier's parts shared by notify.c (queue, worker, state),
 * notify_cfg.c (the notify: section) and notify_fmt.c (texts, templates,
 * signatures, the channel types' requests). Not for other modules. */
#ifndef CAREHUB_NOTIFY_INT_H
#define CAREHUB_NOTIFY_INT_H

#include "cfg.h"
#include "notify.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct notify_channel;

/* One HTTP request, built by a channel type (heap strings, freed by
 * notify_req_free). */
struct notify_req {
    char *url;
    char *body;
    char *content_type;
};
void notify_req_free(struct notify_req *r);

/* What a delivery needs to build its request: the event, the recipient
 * number (or NULL) and the raise's time of day. */
struct notify_msg {
    const struct notify_event *ev;
    const char *to;
    const char *raise_hms;
    int64_t now_ms; /* wall clock, for signatures */
};

/* A channel type: builds a request, and judges the answer. */
struct notify_type {
    const char *name;
    bool sign;           /* takes a secret (sign: defaults to true) */
    bool templated;      /* template:, content_type:, to: allowed */
    int64_t rate;        /* default messages per minute, 0 = unlimited */
    const char *deftmpl; /* default template (NULL: the type builds its body) */
    /* Fills *req; returns 0 or CH_ENOMEM-style error. */
    int (*build)(const struct notify_channel *c, const struct notify_msg *m,
                 struct notify_req *req);
    /* For a 2xx answer: true if body says delivered, else detail says why. */
    bool (*accepted)(const char *body, char *detail, size_t n);
};
const struct notify_type *notify_type_find(const char *name);

enum { NOTIFY_LOC_ZH = 0, NOTIFY_LOC_EN = 1 };

struct notify_channel {
    char *id, *name, *type, *url, *secret, *tmpl, *content_type, *locale;
    bool sign;
    int64_t rate;
    struct cfg_list mention; /* char * */
    struct cfg_list to;      /* char * */
    struct fy_node *headers; /* during parsing only */
    struct fy_node *node;
    /* derived */
    const struct notify_type *t;
    char **hdrs; /* "Name: value" */
    size_t nhdrs;
    bool json; /* the template's body is JSON */
};

/* A target of a level: a channel or a roster (index into its array). */
struct notify_target {
    bool roster;
    size_t idx;
};

struct notify_window {
    char *time;
    struct cfg_list channels; /* char * */
    int start, end;           /* minutes of the day; end < start: crosses midnight */
    size_t *chan;             /* channel indexes */
};

struct notify_roster {
    char *id;
    struct notify_window *w;
    size_t n;
};

struct notify_level {
    struct notify_target *t;
    size_t n;
};

struct notify_route {
    struct cfg_list priorities; /* char * */
    struct cfg_list events;     /* char * */
    struct fy_node *levels;     /* during parsing only */
    struct fy_node *node;
    /* derived */
    unsigned prio_mask, event_mask;
    struct notify_level *lv;
    size_t nlv;
};

struct notify_retry {
    int64_t first_ms, max_ms, give_up_ms;
};

struct notify_cfg {
    struct cfg_list channels; /* struct notify_channel */
    struct cfg_list routes;   /* struct notify_route */
    struct fy_node *rosters_node;
    struct notify_retry retry;
    int64_t queue;
    /* derived */
    struct notify_roster *rosters;
    size_t nrosters;
};

static inline struct notify_channel *notify_chan(const struct notify_cfg *c, size_t i)
{
    return &((struct notify_channel *)c->channels.items)[i];
}

/* The index of the channel with id, or -1. */
long notify_chan_find(const struct notify_cfg *c, const char *id);

/* The route for (priority, event kind), or NULL. */
const struct notify_route *notify_route_for(const struct notify_cfg *c, int priority);

/* Appends to chans (at most max, no repeats) the channels of a level's
 * target list at minute_of_day; returns the new count. */
size_t notify_level_channels(const struct notify_cfg *c, const struct notify_level *lv,
                             int minute_of_day, size_t *chans, size_t n, size_t max);

/* Template checks: returns the first unknown placeholder's name (a static
 * buffer) or NULL if every {name} is known. */
const char *notify_template_unknown(const char *tmpl, char *buf, size_t n);

/* JSON-string escaping into a growing buffer (util.h's ch_buf). */
void notify_buf_json(struct ch_buf *b, const char *s);

const char *notify_event_name(int event);
const char *notify_prio_name(int prio);

#endif
