/* Care rules engine. See rules.h for the language and the timing.
 *
 * Compilation. Each rule's `when` and `clear` are parsed once into a small
 * array of nodes (and/or/not over comparisons). Metric names are interned
 * engine-wide, so a device keeps its latest values in a plain array indexed
 * by metric id, and $params are resolved per (rule, device) instance when the
 * engine is built: evaluation never looks a name up.
 *
 * Three-valued logic. A comparison whose operand has no value yet (metric
 * never seen, avg() without a full window) is UNKNOWN, combined by Kleene's
 * rules (false and unknown = false, true or unknown = true, not unknown =
 * unknown). An alarm is raised only by TRUE and cleared only by a clear
 * condition that is TRUE, so a device that has not said enough yet neither
 * raises nor clears anything.
 *
 * Deadband. Without `clear`, the alarm clears when `when` evaluated with
 * every limit relaxed by the deadband is FALSE. The relaxation is a signed
 * slack that `not` flips, so it always moves a limit towards "still active".
 *
 * History. Only metrics that rise()/fall()/avg() name keep history, and only
 * on devices with such a rule: a ring of fixed-width buckets (sum, min, max,
 * count) sized for the longest window that device needs, at most ~1440
 * buckets, so avg(pm25, 24h) costs 1440 buckets of one minute. Buckets are
 * numbered by the monotonic time a reading arrived: a wall-clock step would
 * otherwise put new readings into buckets the ring reads as an hour old (or
 * an hour ahead), and a window would go empty or stale until the clock
 * caught up.
 *
 * Clocks. Every duration (on-delay, off-delay, stale data, history) runs on
 * now.mono_ms; now.wall_ms only labels what the alarm module is told and
 * decides time-of-day windows.
 *
 * Instances. (rule, device) pairs are laid out device by device, so a reading
 * touches one contiguous run. Each keeps the last evaluation of its
 * expressions (so the 1 s tick only advances timers, stale data and windows)
 * and a small state machine: IDLE -> PENDING_ON (on-delay) -> ACTIVE ->
 * PENDING_OFF (off-delay) -> IDLE. The alarm module hears of a change only
 * when an instance enters ACTIVE or leaves it to IDLE, plus once at start
 * with the first definite "clear" (so an alarm restored from the state file
 * learns that its condition is gone).
 *
 * Locking. One mutex; the alarm module is called with it held, which keeps
 * the order of condition changes exactly the order they were decided in. */
#include "rules.h"
#include "alarm.h"
#include "site.h"
#include "driver.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <libfyaml.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPR_MAX_LEN     1024 /* characters of one expression */
#define EXPR_MAX_NODES   128
#define EXPR_MAX_DEPTH   32
#define EXPR_MAX_PARAMS  32
#define WIN_MAX_MS       (7LL * 24 * 3600 * 1000) /* longest rise/fall/avg window */
#define HIST_MAX_BUCKETS 1440

/* ---- expressions ------------------------------------------------------ */

enum tri { F = 0, T = 1, U = 2 };

enum opnd_kind { O_NUM, O_PARAM, O_METRIC, O_RISE, O_FALL, O_AVG };
enum cmp_op { OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE };
enum node_kind { N_OR, N_AND, N_NOT, N_CMP };

struct operand {
    int kind; /* enum opnd_kind */
    int idx;  /* metric id (O_METRIC, functions) or param slot (O_PARAM) */
    double num;
    int64_t win_ms;
};

struct node {
    int kind; /* enum node_kind */
    int op;   /* enum cmp_op */
    int a, b; /* children (N_OR, N_AND: a, b; N_NOT: a) */
    struct operand l, r;
};

struct expr {
    struct node *nodes;
    int n, root;
};

/* Names interned while compiling: metrics engine-wide, params per rule. */
struct names {
    char **v;
    size_t n;
};

static int names_add(struct names *t, const char *s)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i], s) == 0)
            return (int)i;
    t->v = ch_xrealloc(t->v, (t->n + 1) * sizeof *t->v);
    t->v[t->n] = ch_xstrdup(s);
    return (int)t->n++;
}

static void names_free(struct names *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    memset(t, 0, sizeof *t);
}

enum tok { K_END, K_NUM, K_DUR, K_IDENT, K_PARAM, K_LP, K_RP, K_COMMA, K_OP, K_AND, K_OR, K_NOT };

struct parser {
    const char *s;
    size_t pos;   /* next character */
    size_t start; /* of the current token */
    int tok;      /* enum tok */
    double num;
    int64_t dur;
    int op;
    char id[CH_ID_MAX];
    struct expr *e;
    struct names *metrics;
    struct names *params;
    int depth;
    char err[160];
    size_t err_at;
    bool failed;
};

static void perr(struct parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void perr(struct parser *p, size_t at, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    p->err_at = at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
}

static bool is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Reads the next token into p. */
static void next(struct parser *p)
{
    const char *s = p->s;
    while (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\n' || s[p->pos] == '\r')
        p->pos++;
    p->start = p->pos;
    char c = s[p->pos];
    if (c == '\0') {
        p->tok = K_END;
        return;
    }
    if (c == '(' || c == ')' || c == ',') {
        p->tok = c == '(' ? K_LP : c == ')' ? K_RP : K_COMMA;
        p->pos++;
        return;
    }
    if (c == '<' || c == '>' || c == '=' || c == '!') {
        char d = s[p->pos + 1];
        p->tok = K_OP;
        if (d == '=') {
            p->op = c == '<' ? OP_LE : c == '>' ? OP_GE : c == '=' ? OP_EQ : OP_NE;
            p->pos += 2;
        } else if (c == '<' || c == '>') {
            p->op = c == '<' ? OP_LT : OP_GT;
            p->pos++;
        } else {
            perr(p, p->start,
                 c == '=' ? "'=' is not an operator (use '==')"
                          : "'!' is not an operator (use 'not' or '!=')");
            p->tok = K_END;
        }
        return;
    }
    if ((c >= '0' && c <= '9') || c == '.' ||
        (c == '-' && ((s[p->pos + 1] >= '0' && s[p->pos + 1] <= '9') || s[p->pos + 1] == '.'))) {
        char *end;
        double v = strtod(s + p->pos, &end);
        if (end == s + p->pos || !isfinite(v)) {
            perr(p, p->start, "bad number");
            p->tok = K_END;
            return;
        }
        size_t e = (size_t)(end - s);
        if (is_alpha(s[e])) {
            /* a duration: 10m, 24h, 30s, 500ms */
            char buf[32];
            size_t n = e;
            while (is_alpha(s[n]))
                n++;
            int64_t ms;
            if (n - p->pos >= sizeof buf) {
                perr(p, p->start, "bad duration");
                p->tok = K_END;
                return;
            }
            memcpy(buf, s + p->pos, n - p->pos);
            buf[n - p->pos] = '\0';
            if (ch_parse_duration_ms(buf, &ms) != 0) {
                perr(p, p->start, "bad duration '%s' (units: ms, s, m, h)", buf);
                p->tok = K_END;
                return;
            }
            p->tok = K_DUR;
            p->dur = ms;
            p->pos = n;
            return;
        }
        p->tok = K_NUM;
        p->num = v;
        p->pos = e;
        return;
    }
    if (c == '$' || is_alpha(c)) {
        size_t b = p->pos + (c == '$');
        size_t n = b;
        while (is_id_char(s[n]))
            n++;
        if (n == b || n - b >= sizeof p->id) {
            perr(p, p->start,
                 n == b ? "'$' must be followed by a parameter name"
                        : "name longer than 64 characters");
            p->tok = K_END;
            return;
        }
        memcpy(p->id, s + b, n - b);
        p->id[n - b] = '\0';
        p->pos = n;
        if (c == '$')
            p->tok = K_PARAM;
        else if (strcmp(p->id, "and") == 0)
            p->tok = K_AND;
        else if (strcmp(p->id, "or") == 0)
            p->tok = K_OR;
        else if (strcmp(p->id, "not") == 0)
            p->tok = K_NOT;
        else
            p->tok = K_IDENT;
        return;
    }
    perr(p, p->start, "unexpected character '%c'", c);
    p->tok = K_END;
}

static int new_node(struct parser *p, int kind)
{
    if (p->e->n >= EXPR_MAX_NODES) {
        perr(p, p->start, "expression too long (more than %d terms)", EXPR_MAX_NODES);
        return -1;
    }
    struct node *nd = &p->e->nodes[p->e->n];
    memset(nd, 0, sizeof *nd);
    nd->kind = kind;
    nd->a = nd->b = -1;
    return p->e->n++;
}

static const char *tok_desc(const struct parser *p)
{
    switch (p->tok) {
    case K_END:
        return "end of expression";
    case K_RP:
        return "')'";
    case K_COMMA:
        return "','";
    case K_OP:
        return "an operator";
    case K_AND:
        return "'and'";
    case K_OR:
        return "'or'";
    case K_NOT:
        return "'not'";
    case K_DUR:
        return "a duration";
    default:
        return "this";
    }
}

/* number | $param | metric | fn(metric, duration) */
static bool parse_operand(struct parser *p, struct operand *o)
{
    memset(o, 0, sizeof *o);
    if (p->tok == K_NUM) {
        o->kind = O_NUM;
        o->num = p->num;
        next(p);
        return true;
    }
    if (p->tok == K_PARAM) {
        bool known = false;
        for (size_t i = 0; i < p->params->n; i++)
            known |= strcmp(p->params->v[i], p->id) == 0;
        if (!known && p->params->n >= EXPR_MAX_PARAMS) {
            perr(p, p->start, "too many $params (at most %d)", EXPR_MAX_PARAMS);
            return false;
        }
        o->kind = O_PARAM;
        o->idx = names_add(p->params, p->id);
        next(p);
        return true;
    }
    if (p->tok == K_IDENT) {
        char name[CH_ID_MAX];
        size_t at = p->start;
        ch_strlcpy(name, p->id, sizeof name);
        next(p);
        if (p->tok != K_LP) {
            o->kind = O_METRIC;
            o->idx = names_add(p->metrics, name);
            return true;
        }
        if (strcmp(name, "rise") == 0)
            o->kind = O_RISE;
        else if (strcmp(name, "fall") == 0)
            o->kind = O_FALL;
        else if (strcmp(name, "avg") == 0)
            o->kind = O_AVG;
        else {
            perr(p, at, "unknown function '%s' (known: rise, fall, avg)", name);
            return false;
        }
        next(p);
        if (p->tok != K_IDENT) {
            perr(p, p->start, "%s() needs a metric name first, got %s", name, tok_desc(p));
            return false;
        }
        o->idx = names_add(p->metrics, p->id);
        next(p);
        if (p->tok != K_COMMA) {
            perr(p, p->start, "expected ',' and a duration in %s(metric, duration)", name);
            return false;
        }
        next(p);
        if (p->tok != K_DUR) {
            perr(p, p->start, "expected a duration (e.g. 10m) in %s(metric, duration)", name);
            return false;
        }
        if (p->dur < 1000 || p->dur > WIN_MAX_MS) {
            perr(p, p->start, "bad window: %s() takes 1s to 7 days (168h)", name);
            return false;
        }
        o->win_ms = p->dur;
        next(p);
        if (p->tok != K_RP) {
            perr(p, p->start, "expected ')' to close %s(", name);
            return false;
        }
        next(p);
        return true;
    }
    if (p->tok == K_DUR)
        perr(p, p->start, "a duration is only allowed inside rise/fall/avg");
    else
        perr(p, p->start, "expected a number, a metric, a $param or a function, got %s",
             tok_desc(p));
    return false;
}

static int parse_or(struct parser *p);

/* not unary | ( or ) | operand op operand */
static int parse_unary(struct parser *p)
{
    if (p->failed)
        return -1;
    if (++p->depth > EXPR_MAX_DEPTH) {
        perr(p, p->start, "expression nested too deeply");
        return -1;
    }
    int id = -1;
    if (p->tok == K_NOT) {
        next(p);
        int child = parse_unary(p);
        if (child < 0)
            goto out;
        id = new_node(p, N_NOT);
        if (id >= 0)
            p->e->nodes[id].a = child;
    } else if (p->tok == K_LP) {
        size_t open = p->start;
        next(p);
        id = parse_or(p);
        if (id >= 0 && p->tok != K_RP) {
            perr(p, p->start, "expected ')' to close the '(' at character %zu, got %s", open + 1,
                 tok_desc(p));
            id = -1;
        }
        if (id >= 0)
            next(p);
    } else {
        struct operand l, r;
        if (!parse_operand(p, &l))
            goto out;
        if (p->tok != K_OP) {
            perr(p, p->start, "expected a comparison (< <= > >= == !=), got %s", tok_desc(p));
            goto out;
        }
        int op = p->op;
        next(p);
        if (!parse_operand(p, &r))
            goto out;
        if (l.kind <= O_PARAM && r.kind <= O_PARAM) {
            perr(p, p->start, "a comparison needs a metric on one side");
            goto out;
        }
        id = new_node(p, N_CMP);
        if (id >= 0) {
            p->e->nodes[id].op = op;
            p->e->nodes[id].l = l;
            p->e->nodes[id].r = r;
        }
    }
out:
    p->depth--;
    return p->failed ? -1 : id;
}

/* One level of left-associative binary operators: sub (op sub)*. */
static int parse_binary(struct parser *p, int op_tok, int node_type, int (*sub)(struct parser *))
{
    int l = sub(p);
    while (l >= 0 && p->tok == op_tok) {
        next(p);
        int r = sub(p);
        if (r < 0)
            return -1;
        int id = new_node(p, node_type);
        if (id < 0)
            return -1;
        p->e->nodes[id].a = l;
        p->e->nodes[id].b = r;
        l = id;
    }
    return l;
}

static int parse_and(struct parser *p)
{
    return parse_binary(p, K_AND, N_AND, parse_unary);
}

static int parse_or(struct parser *p)
{
    return parse_binary(p, K_OR, N_OR, parse_and);
}

/* Compiles text into e, interning names. Returns 0, or -1 with the message
 * and the 0-based character position in err/at. */
static int expr_compile(const char *text, struct expr *e, struct names *metrics,
                        struct names *params, char *err, size_t errn, size_t *at)
{
    memset(e, 0, sizeof *e);
    size_t len = strlen(text);
    if (len > EXPR_MAX_LEN) {
        snprintf(err, errn, "expression longer than %d characters", EXPR_MAX_LEN);
        *at = 0;
        return -1;
    }
    struct parser p = {.s = text, .metrics = metrics, .params = params};
    e->nodes = ch_xcalloc(EXPR_MAX_NODES, sizeof *e->nodes);
    p.e = e;
    next(&p);
    if (p.tok == K_END && !p.failed)
        perr(&p, 0, "empty expression");
    int root = p.failed ? -1 : parse_or(&p);
    if (root >= 0 && p.tok != K_END)
        perr(&p, p.start, "unexpected %s after a complete condition (missing 'and'/'or'?)",
             tok_desc(&p));
    if (p.failed) {
        ch_strlcpy(err, p.err, errn);
        *at = p.err_at;
        free(e->nodes);
        memset(e, 0, sizeof *e);
        return -1;
    }
    e->root = root;
    e->nodes = ch_xrealloc(e->nodes, (size_t)e->n * sizeof *e->nodes);
    return 0;
}

static void expr_free(struct expr *e)
{
    free(e->nodes);
    memset(e, 0, sizeof *e);
}

/* Calls fn for every metric operand of e (functions included). */
static void expr_metrics(const struct expr *e, void (*fn)(void *arg, const struct operand *o),
                         void *arg)
{
    for (int i = 0; i < e->n; i++) {
        const struct node *nd = &e->nodes[i];
        if (nd->kind != N_CMP)
            continue;
        if (nd->l.kind >= O_METRIC)
            fn(arg, &nd->l);
        if (nd->r.kind >= O_METRIC)
            fn(arg, &nd->r);
    }
}

/* ---- history of windowed metrics ---------------------------------------- */

struct bucket {
    int64_t idx; /* absolute bucket number (time / width); -1 empty */
    double sum, min, max;
    uint32_t n;
};

struct series {
    int64_t width_ms;
    size_t nb;
    int64_t since_ms; /* first sample */
    double last;
    bool has;
    struct bucket b[];
};

static struct series *series_new(int64_t win_ms)
{
    int64_t width = (win_ms + HIST_MAX_BUCKETS - 1) / HIST_MAX_BUCKETS;
    width = (width + 999) / 1000 * 1000; /* whole seconds */
    if (width < 1000)
        width = 1000;
    size_t nb = (size_t)(win_ms / width) + 2;
    struct series *s = ch_xcalloc(1, sizeof *s + nb * sizeof(struct bucket));
    s->width_ms = width;
    s->nb = nb;
    for (size_t i = 0; i < nb; i++)
        s->b[i].idx = -1;
    return s;
}

/* now: monotonic ms of the reading's arrival. */
static void series_add(struct series *s, int64_t now, double v)
{
    if (now < 0)
        return;
    int64_t idx = now / s->width_ms;
    struct bucket *b = &s->b[(size_t)idx % s->nb];
    if (b->idx != idx) {
        b->idx = idx;
        b->sum = 0;
        b->n = 0;
        b->min = b->max = v;
    }
    b->sum += v;
    b->n++;
    if (v < b->min)
        b->min = v;
    if (v > b->max)
        b->max = v;
    if (!s->has)
        s->since_ms = now;
    s->has = true;
    s->last = v;
}

/* rise/fall/avg over the buckets overlapping [now - win, now]. */
static bool series_query(const struct series *s, int kind, int64_t win, int64_t now, double *out)
{
    if (!s || !s->has || now < 0)
        return false;
    if (kind == O_AVG && s->since_ms > now - win + s->width_ms)
        return false; /* not a whole window of data yet */
    int64_t hi = now / s->width_ms;
    int64_t lo = (now - win) / s->width_ms;
    if (lo < 0)
        lo = 0;
    if (hi - lo + 1 > (int64_t)s->nb)
        lo = hi - (int64_t)s->nb + 1;
    double sum = 0, mn = INFINITY, mx = -INFINITY;
    uint64_t n = 0;
    for (int64_t i = lo; i <= hi; i++) {
        const struct bucket *b = &s->b[(size_t)i % s->nb];
        if (b->idx != i)
            continue;
        sum += b->sum;
        n += b->n;
        if (b->min < mn)
            mn = b->min;
        if (b->max > mx)
            mx = b->max;
    }
    switch (kind) {
    case O_AVG:
        if (n == 0)
            return false;
        *out = sum / (double)n;
        return true;
    case O_RISE:
        if (n < 2)
            return false;
        *out = s->last - mn;
        return true;
    default: /* O_FALL */
        if (n < 2)
            return false;
        *out = mx - s->last;
        return true;
    }
}

/* ---- the engine --------------------------------------------------------- */

struct crule {
    const struct rule_cfg *cfg;
    struct expr when, clear;
    bool has_when, has_clear;
    struct names params;
    int win_start, win_end; /* minutes of the day; -1: no window */
};

enum ist { I_IDLE, I_PENDING_ON, I_ACTIVE, I_PENDING_OFF };
enum irep { REP_NONE, REP_CLEAR, REP_ACTIVE };

struct inst {
    const struct crule *rule;
    struct dev *dev;
    double *params;      /* one per rule param slot */
    int st;              /* enum ist */
    int reported;        /* enum irep */
    int64_t since_ms;    /* monotonic: entered PENDING_ON / PENDING_OFF */
    int when_v, clear_v; /* last evaluation (enum tri) */
    int trig;            /* metric id of what made `when` true, -1 none */
    double trig_value;
    double sent_value; /* last value told to the alarm module */
    bool sent_has;
};

/* One rise/fall/avg result: many rules ask the same question of the same
 * history (avg(tvoc, 8h) > 160, > 200, ...) within one reading. */
struct memo {
    int64_t win, now;
    uint64_t version;
    int idx, kind;
    bool ok;
    double v;
};

#define MEMO_SLOTS 16

struct dev {
    const struct device_cfg *cfg;
    const struct resident_cfg *res;
    double *val;
    bool *has;
    struct series **series; /* per metric id, NULL if no window needs it */
    int64_t last_data_ms;   /* monotonic */
    char where[CH_ID_MAX];  /* the room of its latest reading: a wearable's zone */
    int64_t where_told_ms;  /* mono: when the alarm module last heard where it is */
    size_t first, n;        /* its instances */
    uint64_t version;       /* of its history: bumped by every sample */
    struct memo memo[MEMO_SLOTS];
};

/* How often the alarms of a wearable that stays in one zone hear that it
 * was seen there again (their located_ms): a card says "seen 10 s ago". */
#define WHERE_REFRESH_MS 10000

struct rules {
    pthread_mutex_t lock;
    const struct site_config *c;
    struct alarms *am;
    struct names metrics;
    size_t n_rules;
    struct crule *rules;
    size_t n_devs;
    struct dev *devs;
    size_t n_inst;
    struct inst *inst;
    double *param_pool;
    bool started;
    int64_t tod_minute_key; /* wall now / 60000 of the cached minute of day */
    int tod_minute;
    /* metric lookup: open addressing over metric ids */
    int *mhash;
    size_t mhash_n;
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int metric_lookup(const struct rules *r, const char *name)
{
    if (!r->mhash_n)
        return -1;
    size_t mask = r->mhash_n - 1;
    for (size_t i = hash_str(name) & mask;; i = (i + 1) & mask) {
        int id = r->mhash[i];
        if (id < 0)
            return -1;
        if (strcmp(r->metrics.v[id], name) == 0)
            return id;
    }
}

/* ---- selection ---------------------------------------------------------- */

static bool strlist_has(const struct cfg_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (s && strcmp(((char **)l->items)[i], s) == 0)
            return true;
    return false;
}

static const struct resident_cfg *resident_of(const struct site_config *c, const char *dev)
{
    for (size_t i = 0; i < c->residents.n; i++)
        if (strlist_has(&SITE_RESIDENT(c, i)->devices, dev))
            return SITE_RESIDENT(c, i);
    return NULL;
}

static const char *room_of(const struct device_cfg *d, const struct resident_cfg *res)
{
    if (d->room && *d->room)
        return d->room;
    return res && res->room ? res->room : NULL;
}

static bool profile_has_metric(const struct profile *p, const char *m)
{
    for (size_t i = 0; p && i < p->regs.n; i++)
        if (strcmp(PROFILE_REG(p, i)->metric, m) == 0)
            return true;
    for (size_t i = 0; p && i < p->metrics.n; i++)
        if (strcmp(PROFILE_METRIC(p, i)->metric, m) == 0)
            return true;
    /* what its driver adds (a wearable's in_range, zone, ...) */
    const struct driver_protocol *proto = p ? driver_protocol(p->protocol) : NULL;
    return proto && proto->has_metric && proto->has_metric(p, m);
}

static bool profile_selected(const struct rule_select *s, const struct profile *p)
{
    if (!p)
        return false;
    if (s->kinds.n && !strlist_has(&s->kinds, p->kind))
        return false;
    if (s->profiles.n && !strlist_has(&s->profiles, p->id))
        return false;
    return true;
}

static bool device_level_select(const struct rule_select *s)
{
    return s->devices.n || s->rooms.n || s->residents.n || s->wandering_risk;
}

static bool device_selected(const struct rule_select *s, const struct device_cfg *d,
                            const struct resident_cfg *res)
{
    if (!profile_selected(s, d->prof))
        return false;
    if (s->devices.n && !strlist_has(&s->devices, d->id))
        return false;
    if (s->rooms.n && !strlist_has(&s->rooms, room_of(d, res)))
        return false;
    if (s->residents.n && !(res && strlist_has(&s->residents, res->id)))
        return false;
    if (s->wandering_risk && !(res && res->wandering_risk))
        return false;
    return true;
}

/* ---- checking ----------------------------------------------------------- */

static int parse_hhmm(const char *s, int *out)
{
    if (!(s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] == ':' && s[3] >= '0' &&
          s[3] <= '9' && s[4] >= '0' && s[4] <= '9'))
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    if (h > 23 || m > 59)
        return -1;
    *out = h * 60 + m;
    return 0;
}

/* "HH:MM-HH:MM" -> minutes of the day. */
static int parse_window(const char *w, int *start, int *end)
{
    if (strlen(w) != 11 || w[5] != '-')
        return -1;
    if (parse_hhmm(w, start) != 0 || parse_hhmm(w + 6, end) != 0)
        return -1;
    return *start == *end ? -1 : 0;
}

static struct fy_node *select_node(const struct rule_cfg *r)
{
    return r->node ? fy_node_mapping_lookup_by_string(r->node, "select", FY_NT) : NULL;
}

/* Reports an unknown name in one select list. */
static int check_select_list(const struct rule_cfg *r, const struct cfg_list *l, const char *key,
                             const char *what,
                             bool (*known)(const struct site_config *, const char *),
                             const struct site_config *c)
{
    int errors = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *name = ((char **)l->items)[i];
        if (!known(c, name)) {
            cfg_report(select_node(r), key, "key 'select.%s': rule '%s' names unknown %s '%s'", key,
                       r->id, what, name);
            errors++;
        }
    }
    return errors;
}

static bool known_device(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->devices.n; i++)
        if (strcmp(SITE_DEV(c, i)->id, id) == 0)
            return true;
    return false;
}

static bool known_profile(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->n_profiles; i++)
        if (strcmp(c->profiles[i].id, id) == 0)
            return true;
    return false;
}

static bool known_resident(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->residents.n; i++)
        if (strcmp(SITE_RESIDENT(c, i)->id, id) == 0)
            return true;
    return false;
}

static bool known_room(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->devices.n; i++)
        if (SITE_DEV(c, i)->room && strcmp(SITE_DEV(c, i)->room, id) == 0)
            return true;
    for (size_t i = 0; i < c->residents.n; i++)
        if (SITE_RESIDENT(c, i)->room && strcmp(SITE_RESIDENT(c, i)->room, id) == 0)
            return true;
    return false;
}

struct mcheck {
    const struct site_config *c;
    const struct rule_cfg *r;
    const struct names *metrics;
    const char *key;
    int errors;
    bool have_profiles;
    const struct profile **profs; /* the profiles the rule selects */
    size_t n_profs;
};

static void check_metric(void *arg, const struct operand *o)
{
    struct mcheck *m = arg;
    if (!m->have_profiles)
        return;
    const char *name = m->metrics->v[o->idx];
    for (size_t i = 0; i < m->n_profs; i++)
        if (profile_has_metric(m->profs[i], name))
            return;
    char list[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < m->n_profs && len < sizeof list - 1; i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", m->profs[i]->id);
        len += w > 0 ? (size_t)w : 0;
    }
    cfg_report(m->r->node, m->key,
               "key '%s': unknown metric '%s' in rule '%s' (not in the profiles it selects: %s)",
               m->key, name, m->r->id, list);
    m->errors++;
}

static bool message_ok(const char *msg, char *bad, size_t n)
{
    static const char *const known[] = {"value", "metric", "device", "room", "bed", "resident"};
    for (const char *p = strchr(msg, '{'); p; p = strchr(p + 1, '{')) {
        const char *e = strchr(p, '}');
        if (!e)
            return true; /* a lone brace is text */
        bool ok = false;
        for (size_t i = 0; i < CH_ARRAY_LEN(known); i++)
            ok |= strlen(known[i]) == (size_t)(e - p - 1) &&
                  !strncmp(p + 1, known[i], (size_t)(e - p - 1));
        if (!ok) {
            snprintf(bad, n, "%.*s", (int)(e - p + 1 > 40 ? 40 : e - p + 1), p);
            return false;
        }
    }
    return true;
}

static bool resident_has_param(const struct resident_cfg *res, const char *name)
{
    return res && cfg_param_find(&res->params, name);
}

/* Checks one rule; metrics gets its metric names. Returns errors. */
static int check_rule(const struct site_config *c, const struct rule_cfg *r, struct crule *cr,
                      struct names *metrics)
{
    int errors = 0;
    char err[200];
    size_t at;
    memset(cr, 0, sizeof *cr);
    cr->cfg = r;
    cr->win_start = cr->win_end = -1;
    if (!r->when && !r->stale_ms) {
        cfg_report(r->node, "when",
                   "rule '%s' needs 'when' (a condition) or 'no_data' (a stale-data limit)", r->id);
        errors++;
    }
    if (r->clear && !r->when) {
        cfg_report(r->node, "clear", "key 'clear': rule '%s' has 'clear' but no 'when'", r->id);
        errors++;
    }
    if (r->clear && r->deadband > 0) {
        cfg_report(r->node, "deadband",
                   "key 'deadband': rule '%s' has both 'clear' and 'deadband'; the deadband "
                   "only shapes the implicit clear (drop one)",
                   r->id);
        errors++;
    }
    if (r->when) {
        if (expr_compile(r->when, &cr->when, metrics, &cr->params, err, sizeof err, &at) != 0) {
            cfg_report(r->node, "when", "key 'when': bad expression at character %zu of '%s': %s",
                       at + 1, r->when, err);
            errors++;
        } else {
            cr->has_when = true;
        }
    }
    if (r->clear) {
        if (expr_compile(r->clear, &cr->clear, metrics, &cr->params, err, sizeof err, &at) != 0) {
            cfg_report(r->node, "clear", "key 'clear': bad expression at character %zu of '%s': %s",
                       at + 1, r->clear, err);
            errors++;
        } else {
            cr->has_clear = true;
        }
    }
    if (r->window && parse_window(r->window, &cr->win_start, &cr->win_end) != 0) {
        cfg_report(r->node, "window",
                   "key 'window': bad window '%s' (want HH:MM-HH:MM in the site's time zone, "
                   "e.g. 22:00-06:00; start and end must differ)",
                   r->window);
        cr->win_start = cr->win_end = -1;
        errors++;
    }
    if (r->message && !message_ok(r->message, err, sizeof err)) {
        cfg_report(r->node, "message",
                   "key 'message': unknown placeholder %s (known: {value} {metric} {device} "
                   "{room} {bed} {resident})",
                   err);
        errors++;
    }
    const struct rule_select *s = &r->select;
    errors += check_select_list(r, &s->devices, "device", "device", known_device, c);
    errors += check_select_list(r, &s->profiles, "profile", "profile", known_profile, c);
    errors += check_select_list(r, &s->residents, "resident", "resident", known_resident, c);
    errors += check_select_list(r, &s->rooms, "room", "room", known_room, c);

    /* unknown metrics: against the profiles the rule selects (those of its
     * devices if it names devices, rooms or residents); a rule that selects
     * nothing on this site is fine (a pack rule for devices not here) */
    struct mcheck m = {.c = c, .r = r, .metrics = metrics};
    m.profs = ch_xcalloc(c->n_profiles + c->devices.n + 1, sizeof *m.profs);
    if (device_level_select(s)) {
        for (size_t i = 0; i < c->devices.n; i++) {
            const struct device_cfg *d = SITE_DEV(c, i);
            if (device_selected(s, d, resident_of(c, d->id)) && d->prof) {
                bool dup = false;
                for (size_t k = 0; k < m.n_profs; k++)
                    dup |= m.profs[k] == d->prof;
                if (!dup)
                    m.profs[m.n_profs++] = d->prof;
            }
        }
    } else {
        for (size_t i = 0; i < c->n_profiles; i++)
            if (profile_selected(s, &c->profiles[i]))
                m.profs[m.n_profs++] = &c->profiles[i];
    }
    m.have_profiles = m.n_profs > 0;
    m.key = "when";
    if (cr->has_when)
        expr_metrics(&cr->when, check_metric, &m);
    m.key = "clear";
    if (cr->has_clear)
        expr_metrics(&cr->clear, check_metric, &m);
    free(m.profs);
    errors += m.errors;

    /* $params: the rule's own value, else every resident whose device gets
     * the rule must have one */
    for (size_t k = 0; k < cr->params.n; k++) {
        const char *name = cr->params.v[k];
        if (cfg_param_find(&r->params, name))
            continue;
        const char *missing = NULL;
        size_t selected = 0;
        for (size_t i = 0; i < c->devices.n && !missing; i++) {
            const struct device_cfg *d = SITE_DEV(c, i);
            const struct resident_cfg *res = resident_of(c, d->id);
            if (!device_selected(s, d, res))
                continue;
            selected++;
            if (!resident_has_param(res, name))
                missing = d->id;
        }
        const char *key = cr->has_when && strstr(r->when, name) ? "when" : "clear";
        if (missing || selected == 0) {
            if (missing)
                cfg_report(r->node, key,
                           "key '%s': unknown $param '%s' in rule '%s': not in the rule's params, "
                           "nor in the params of the resident of device '%s'",
                           key, name, r->id, missing);
            else
                cfg_report(r->node, key,
                           "key '%s': unknown $param '%s' in rule '%s': give it a default in the "
                           "rule's params",
                           key, name, r->id);
            errors++;
        }
    }
    return errors;
}

static void crule_free(struct crule *cr)
{
    expr_free(&cr->when);
    expr_free(&cr->clear);
    names_free(&cr->params);
}

int rules_check(const struct site_config *c)
{
    int errors = 0;
    struct names metrics = {0};
    for (size_t i = 0; i < c->n_all_rules; i++) {
        struct crule cr;
        errors += check_rule(c, c->all_rules[i], &cr, &metrics);
        crule_free(&cr);
    }
    names_free(&metrics);
    return errors;
}

/* ---- evaluation --------------------------------------------------------- */

struct ctx {
    struct dev *d;
    const double *params;
    int64_t now; /* monotonic */
    int trig;    /* first metric operand of a true comparison (positive polarity) */
    double trig_value;
};

static bool operand_value(const struct ctx *x, const struct operand *o, double *v)
{
    switch (o->kind) {
    case O_NUM:
        *v = o->num;
        return true;
    case O_PARAM:
        *v = x->params[o->idx];
        return true;
    case O_METRIC:
        if (!x->d->has[o->idx])
            return false;
        *v = x->d->val[o->idx];
        return true;
    default: {
        struct dev *d = x->d;
        uint64_t h = (uint64_t)o->idx * 31 + (uint64_t)o->kind * 7 + (uint64_t)o->win_ms;
        struct memo *m = &d->memo[h % MEMO_SLOTS];
        if (m->idx != o->idx || m->kind != o->kind || m->win != o->win_ms || m->now != x->now ||
            m->version != d->version) {
            m->idx = o->idx;
            m->kind = o->kind;
            m->win = o->win_ms;
            m->now = x->now;
            m->version = d->version;
            m->ok = series_query(d->series[o->idx], o->kind, o->win_ms, x->now, &m->v);
        }
        *v = m->v;
        return m->ok;
    }
    }
}

/* slack > 0 relaxes every limit towards true (deadband); `not` flips it. */
static int eval(const struct expr *e, int i, struct ctx *x, double slack, bool positive)
{
    const struct node *nd = &e->nodes[i];
    switch (nd->kind) {
    case N_NOT: {
        int v = eval(e, nd->a, x, -slack, !positive);
        return v == U ? U : !v;
    }
    case N_AND: {
        int a = eval(e, nd->a, x, slack, positive);
        if (a == F)
            return F;
        int b = eval(e, nd->b, x, slack, positive);
        return b == F ? F : (a == T && b == T) ? T : U;
    }
    case N_OR: {
        int a = eval(e, nd->a, x, slack, positive);
        if (a == T)
            return T;
        int b = eval(e, nd->b, x, slack, positive);
        return b == T ? T : (a == F && b == F) ? F : U;
    }
    default: {
        double l, r;
        if (!operand_value(x, &nd->l, &l) || !operand_value(x, &nd->r, &r))
            return U;
        bool v;
        switch (nd->op) {
        case OP_LT:
            v = l < r + slack;
            break;
        case OP_LE:
            v = l <= r + slack;
            break;
        case OP_GT:
            v = l > r - slack;
            break;
        case OP_GE:
            v = l >= r - slack;
            break;
        case OP_EQ:
            v = l == r;
            break;
        default:
            v = l != r;
            break;
        }
        if (v && positive && x->trig < 0) {
            bool left = nd->l.kind >= O_METRIC;
            x->trig = left ? nd->l.idx : nd->r.idx;
            x->trig_value = left ? l : r;
        }
        return v ? T : F;
    }
    }
}

/* now: monotonic (the history windows end there). */
static void evaluate(struct inst *in, int64_t now)
{
    const struct crule *cr = in->rule;
    struct ctx x = {.d = in->dev, .params = in->params, .now = now, .trig = -1};
    in->when_v = in->clear_v = U;
    in->trig = -1;
    if (!cr->has_when)
        return;
    in->when_v = eval(&cr->when, cr->when.root, &x, 0, true);
    if (in->when_v == T) {
        in->trig = x.trig;
        in->trig_value = x.trig_value;
    }
    struct ctx y = {.d = in->dev, .params = in->params, .now = now, .trig = -1};
    if (cr->has_clear) {
        in->clear_v = eval(&cr->clear, cr->clear.root, &y, 0, true);
    } else {
        int relaxed = eval(&cr->when, cr->when.root, &y, cr->cfg->deadband, true);
        in->clear_v = relaxed == U ? U : !relaxed;
    }
}

/* now: wall clock (a time of day is a label use of it). */
static int minute_of_day(struct rules *r, int64_t now)
{
    int64_t key = now / 60000;
    if (key != r->tod_minute_key) {
        time_t t = (time_t)(now / 1000);
        struct tm tm;
        if (localtime_r(&t, &tm))
            r->tod_minute = tm.tm_hour * 60 + tm.tm_min;
        r->tod_minute_key = key;
    }
    return r->tod_minute;
}

static bool in_window(struct rules *r, const struct crule *cr, int64_t now)
{
    if (cr->win_start < 0)
        return true;
    int m = minute_of_day(r, now);
    if (cr->win_start < cr->win_end)
        return m >= cr->win_start && m < cr->win_end;
    return m >= cr->win_start || m < cr->win_end; /* crosses midnight */
}

/* Fills the rule's message template. */
static void format_message(const struct rules *r, const struct inst *in, const char *metric,
                           bool has_value, double value, char *out, size_t n)
{
    const struct rule_cfg *rc = in->rule->cfg;
    const char *tpl = rc->message && *rc->message           ? rc->message
                      : rc->description && *rc->description ? rc->description
                                                            : rc->id;
    const struct device_cfg *d = in->dev->cfg;
    const struct resident_cfg *res = in->dev->res;
    size_t len = 0;
    out[0] = '\0';
    for (const char *p = tpl; *p && len + 1 < n;) {
        const char *sub = NULL;
        char num[32];
        size_t skip = 0;
        if (*p == '{') {
            static const char *const keys[] = {"value}", "metric}", "device}",
                                               "room}",  "bed}",    "resident}"};
            for (size_t k = 0; k < CH_ARRAY_LEN(keys) && !sub; k++) {
                size_t kl = strlen(keys[k]);
                if (strncmp(p + 1, keys[k], kl) != 0)
                    continue;
                skip = kl + 1;
                switch (k) {
                case 0:
                    if (has_value)
                        snprintf(num, sizeof num, "%.4g", value);
                    else
                        ch_strlcpy(num, "-", sizeof num);
                    sub = num;
                    break;
                case 1:
                    sub = metric ? metric : "no data";
                    break;
                case 2:
                    sub = d->name ? d->name : d->id;
                    break;
                case 3: { /* where the carer must go: a wearable's zone, by its name */
                    const char *place = in->dev->where[0] ? in->dev->where : room_of(d, res);
                    const char *name = site_room_name(r->c, place);
                    sub = name ? name : place;
                    break;
                }
                case 4: {
                    const char *name = res ? site_bed_name(r->c, res->room, res->bed) : NULL;
                    sub = name ? name : res ? res->bed : NULL;
                    break;
                }
                default:
                    sub = res ? (res->name ? res->name : res->id) : NULL;
                    break;
                }
                if (!sub)
                    sub = "";
            }
        }
        if (sub) {
            size_t sl = strlen(sub);
            if (len + sl >= n)
                sl = n - 1 - len;
            memcpy(out + len, sub, sl);
            len += sl;
            p += skip;
        } else {
            out[len++] = *p++;
        }
    }
    if (len + 1 >= n) {
        /* cut short: never leave half a UTF-8 sequence at the end */
        while (len > 0 && ((unsigned char)out[len - 1] & 0xC0) == 0x80)
            len--;
        if (len > 0 && (unsigned char)out[len - 1] >= 0xC0)
            len--;
    }
    out[len] = '\0';
}

static void report(struct rules *r, struct inst *in, bool active, bool stale, struct ch_time now)
{
    in->reported = active ? REP_ACTIVE : REP_CLEAR;
    if (!r->am)
        return;
    const char *metric = NULL;
    double value = 0;
    bool has_value = false;
    if (active && !stale && in->trig >= 0) {
        metric = r->metrics.v[in->trig];
        value = in->trig_value;
        has_value = true;
    }
    in->sent_has = has_value;
    in->sent_value = value;
    char msg[CH_TEXT_MAX];
    format_message(r, in, metric, has_value, value, msg, sizeof msg);
    alarms_condition(r->am, in->rule->cfg, in->dev->cfg, in->dev->res, active, metric, value,
                     in->dev->where, msg, now);
}

/* Advances one instance at now (durations on now.mono_ms, the window on
 * now.wall_ms). fed: a reading just arrived (value updates of an active
 * alarm go to the alarm module then). */
static void step(struct rules *r, struct inst *in, struct ch_time t, bool fed)
{
    const struct crule *cr = in->rule;
    const struct rule_cfg *rc = cr->cfg;
    int64_t now = t.mono_ms;
    bool win = in_window(r, cr, t.wall_ms);
    bool stale = rc->stale_ms > 0 && now - in->dev->last_data_ms >= rc->stale_ms;
    bool raise = win && (in->when_v == T || stale);
    bool clear;
    if (!win)
        clear = true;
    else if (cr->has_when && rc->stale_ms > 0)
        clear = in->clear_v == T && !stale;
    else if (cr->has_when)
        clear = in->clear_v == T;
    else
        clear = !stale;
    if (raise)
        clear = false; /* an explicit clear that overlaps when: when wins */

    switch (in->st) {
    case I_IDLE:
        if (raise) {
            in->st = I_PENDING_ON;
            in->since_ms = now;
        } else {
            if (clear && in->reported != REP_CLEAR)
                report(r, in, false, false, t);
            return;
        }
        /* fall through */
    case I_PENDING_ON:
        if (!raise) {
            in->st = I_IDLE; /* the on-delay starts over next time */
            if (clear && in->reported != REP_CLEAR)
                report(r, in, false, false, t);
        } else if (now - in->since_ms >= rc->on_delay_ms) {
            in->st = I_ACTIVE;
            report(r, in, true, stale && in->when_v != T, t);
        }
        return;
    case I_PENDING_OFF:
        if (!clear) {
            in->st = I_ACTIVE;
            break;
        }
        if (now - in->since_ms >= rc->off_delay_ms) {
            in->st = I_IDLE;
            report(r, in, false, false, t);
        }
        return;
    default: /* I_ACTIVE */
        if (clear) {
            in->st = I_PENDING_OFF;
            in->since_ms = now;
            if (rc->off_delay_ms <= 0) {
                in->st = I_IDLE;
                report(r, in, false, false, t);
            }
            return;
        }
        break;
    }
    /* active: keep the alarm's view of the value current */
    if (fed && raise && r->am && in->when_v == T && in->trig >= 0 &&
        (!in->sent_has || in->sent_value != in->trig_value))
        report(r, in, true, false, t);
}

/* now: monotonic. */
static void start_clock(struct rules *r, int64_t now)
{
    if (r->started)
        return;
    r->started = true;
    /* stale data counts from the start of the engine */
    for (size_t i = 0; i < r->n_devs; i++)
        r->devs[i].last_data_ms = now;
}

void rules_feed(struct rules *r, size_t dev, const struct ch_reading *reading, struct ch_time now)
{
    if (!r || !reading)
        return;
    if (dev >= r->n_devs) {
        LOGW("rules", reading->device, "reading for device index %zu of %zu ignored", dev,
             r->n_devs);
        return;
    }
    if (reading->quality == CH_Q_BAD)
        return; /* a meter that answers garbage is not data */
    pthread_mutex_lock(&r->lock);
    start_clock(r, now.mono_ms);
    struct dev *d = &r->devs[dev];
    for (size_t i = 0; i < reading->n_metrics; i++) {
        const struct ch_metric *m = &reading->metrics[i];
        if (!isfinite(m->value))
            continue;
        int id = metric_lookup(r, m->name);
        if (id < 0)
            continue;
        d->val[id] = m->value;
        d->has[id] = true;
        if (d->series[id]) {
            /* by arrival, whatever reading->ts_ms says (see History) */
            series_add(d->series[id], now.mono_ms, m->value);
            d->version++;
        }
    }
    d->last_data_ms = now.mono_ms;
    /* a reading's room is where the device is: a wearable's zone moves */
    bool moved = reading->room[0] && strcmp(d->where, reading->room) != 0;
    if (moved)
        ch_strlcpy(d->where, reading->room, sizeof d->where);
    /* and when it was last seen there: the alarms' located_ms, refreshed
     * now and then, not on every advertisement */
    bool seen = reading->room[0] && now.mono_ms - d->where_told_ms >= WHERE_REFRESH_MS;
    for (size_t i = d->first; i < d->first + d->n; i++) {
        evaluate(&r->inst[i], now.mono_ms);
        step(r, &r->inst[i], now, true);
    }
    if ((moved || seen) && r->am) { /* its alarms raised before say where it is now */
        d->where_told_ms = now.mono_ms;
        alarms_where(r->am, d->cfg, d->where, now);
    }
    pthread_mutex_unlock(&r->lock);
}

void rules_tick(struct rules *r, struct ch_time now)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    start_clock(r, now.mono_ms);
    for (size_t i = 0; i < r->n_inst; i++)
        step(r, &r->inst[i], now, false);
    pthread_mutex_unlock(&r->lock);
}

size_t rules_instances(const struct rules *r)
{
    return r ? r->n_inst : 0;
}

/* ---- building ----------------------------------------------------------- */

struct need {
    struct rules *r;
    struct dev *d;
    bool ok;          /* the device's profile has every metric */
    int64_t *max_win; /* per metric id */
};

static void need_metric(void *arg, const struct operand *o)
{
    struct need *n = arg;
    if (!profile_has_metric(n->d->cfg->prof, n->r->metrics.v[o->idx]))
        n->ok = false;
    if (o->kind != O_METRIC && o->win_ms > n->max_win[o->idx])
        n->max_win[o->idx] = o->win_ms;
}

int rules_create(const struct site_config *c, struct alarms *am, struct rules **out)
{
    *out = NULL;
    if (c->timezone && *c->timezone) {
        /* windows are in the site's local time, whatever the host says */
        setenv("TZ", c->timezone, 1);
    }
    tzset();

    struct rules *r = ch_xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->c = c;
    r->am = am;
    r->tod_minute_key = -1;
    r->n_rules = c->n_all_rules;
    r->rules = ch_xcalloc(r->n_rules + 1, sizeof *r->rules);
    int errors = 0;
    for (size_t i = 0; i < r->n_rules; i++)
        errors += check_rule(c, c->all_rules[i], &r->rules[i], &r->metrics);
    if (errors) {
        LOGE("rules", NULL, "%d rule error(s); not starting the rules engine", errors);
        rules_destroy(r);
        return CH_ECONFIG;
    }
    r->mhash_n = 16;
    while (r->mhash_n < r->metrics.n * 2)
        r->mhash_n *= 2;
    r->mhash = ch_xmalloc(r->mhash_n * sizeof *r->mhash);
    for (size_t i = 0; i < r->mhash_n; i++)
        r->mhash[i] = -1;
    for (size_t id = 0; id < r->metrics.n; id++) {
        size_t mask = r->mhash_n - 1, i = hash_str(r->metrics.v[id]) & mask;
        while (r->mhash[i] >= 0)
            i = (i + 1) & mask;
        r->mhash[i] = (int)id;
    }

    size_t nm = r->metrics.n ? r->metrics.n : 1;
    r->n_devs = c->devices.n;
    r->devs = ch_xcalloc(r->n_devs + 1, sizeof *r->devs);
    int64_t *max_win = ch_xcalloc(nm, sizeof *max_win);
    size_t cap = 0;
    size_t pool_n = 0, pool_cap = 0;
    struct {
        size_t rule;
        size_t dev;
    } *pairs = NULL;
    for (size_t di = 0; di < r->n_devs; di++) {
        struct dev *d = &r->devs[di];
        d->cfg = SITE_DEV(c, di);
        d->res = resident_of(c, d->cfg->id);
        d->val = ch_xcalloc(nm, sizeof *d->val);
        d->has = ch_xcalloc(nm, sizeof *d->has);
        d->series = ch_xcalloc(nm, sizeof *d->series);
        d->first = r->n_inst;
        for (size_t k = 0; k < MEMO_SLOTS; k++)
            d->memo[k].idx = -1;
        memset(max_win, 0, nm * sizeof *max_win);
        if (!d->cfg->enabled || !d->cfg->prof)
            continue;
        for (size_t ri = 0; ri < r->n_rules; ri++) {
            const struct crule *cr = &r->rules[ri];
            if (!device_selected(&cr->cfg->select, d->cfg, d->res))
                continue;
            /* windows count only if the device gets the rule: probe first */
            int64_t *probe = ch_xcalloc(nm, sizeof *probe);
            struct need n = {.r = r, .d = d, .ok = true, .max_win = probe};
            if (cr->has_when)
                expr_metrics(&cr->when, need_metric, &n);
            if (cr->has_clear)
                expr_metrics(&cr->clear, need_metric, &n);
            if (n.ok)
                for (size_t k = 0; k < nm; k++)
                    if (probe[k] > max_win[k])
                        max_win[k] = probe[k];
            free(probe);
            if (!n.ok)
                continue; /* the device cannot tell: e.g. co2 on a temperature meter */
            if (r->n_inst == cap) {
                cap = cap ? cap * 2 : 64;
                pairs = ch_xrealloc(pairs, cap * sizeof *pairs);
            }
            pairs[r->n_inst].rule = ri;
            pairs[r->n_inst].dev = di;
            r->n_inst++;
            pool_n += cr->params.n;
        }
        d->n = r->n_inst - d->first;
        for (size_t k = 0; k < r->metrics.n; k++)
            if (max_win[k] > 0)
                d->series[k] = series_new(max_win[k]);
    }
    free(max_win);
    pool_cap = pool_n ? pool_n : 1;
    r->param_pool = ch_xcalloc(pool_cap, sizeof *r->param_pool);
    r->inst = ch_xcalloc(r->n_inst + 1, sizeof *r->inst);
    size_t used = 0;
    for (size_t i = 0; i < r->n_inst; i++) {
        struct inst *in = &r->inst[i];
        const struct crule *cr = &r->rules[pairs[i].rule];
        in->rule = cr;
        in->dev = &r->devs[pairs[i].dev];
        in->params = r->param_pool + used;
        in->trig = -1;
        in->when_v = in->clear_v = U;
        for (size_t k = 0; k < cr->params.n; k++) {
            const struct cfg_param *p =
                in->dev->res ? cfg_param_find(&in->dev->res->params, cr->params.v[k]) : NULL;
            if (!p)
                p = cfg_param_find(&cr->cfg->params, cr->params.v[k]);
            in->params[k] = p ? p->value : NAN;
        }
        used += cr->params.n;
        if (am)
            alarms_register(am, cr->cfg, in->dev->cfg, in->dev->res);
    }
    free(pairs);
    LOGD("rules", NULL, "%zu rules, %zu instances on %zu devices, %zu metrics", r->n_rules,
         r->n_inst, r->n_devs, r->metrics.n);
    *out = r;
    return 0;
}

void rules_destroy(struct rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_rules; i++)
        crule_free(&r->rules[i]);
    free(r->rules);
    for (size_t i = 0; i < r->n_devs; i++) {
        struct dev *d = &r->devs[i];
        if (d->series)
            for (size_t k = 0; k < r->metrics.n; k++)
                free(d->series[k]);
        free(d->series);
        free(d->val);
        free(d->has);
    }
    free(r->devs);
    free(r->inst);
    free(r->param_pool);
    free(r->mhash);
    names_free(&r->metrics);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
