#include "cfg.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <libfyaml.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct cfg_file {
    struct fy_document *doc;
    char *dir; /* directory of the file, for CFG_PATH */
};

struct walk {
    struct cfg_file *file;
    int errors;
    int absent; /* > 0 while applying the defaults of an absent section */
    /* while reading an element of a list with variants: the element, its
     * list's key, and its variant (NULL: its variant key is missing or bad) */
    struct fy_node *vmap;
    const struct cfg_key *vlist;
    const struct cfg_variant *variant;
};

#define MERGED_MAX 64 /* keys of one mapping (walk_map's limit) */

#define FIELD(obj, off, T) ((T *)(void *)((char *)(obj) + (off)))

static const char *type_name(enum cfg_type t)
{
    switch (t) {
    case CFG_STR:
    case CFG_PATH:
        return "a string";
    case CFG_ID:
        return "an identifier ([A-Za-z0-9_.-], up to 64)";
    case CFG_INT:
        return "an integer";
    case CFG_FLOAT:
        return "a number";
    case CFG_BOOL:
        return "true or false";
    case CFG_DURATION:
        return "a duration (e.g. 500ms, 10s, 5m)";
    case CFG_ENUM:
        return "one of the listed values";
    case CFG_MAP:
        return "a mapping";
    case CFG_LIST:
        return "a list of mappings";
    case CFG_STRLIST:
        return "a list of strings";
    case CFG_PARAMS:
        return "a mapping of names to numbers";
    case CFG_NAME:
        return "a name (1..127 bytes of UTF-8 text without control characters)";
    case CFG_TEXT:
        return "a string, or a mapping of locales to strings (zh-CN: ..., en: ...)";
    case CFG_NODE:
        return "a value";
    }
    return "?";
}

const struct cfg_enum cfg_log_levels[] = {{"error", LOGL_ERROR},
                                          {"warn", LOGL_WARN},
                                          {"info", LOGL_INFO},
                                          {"debug", LOGL_DEBUG},
                                          {NULL, 0}};

/* clang-format off */
const struct cfg_key cfg_tls_keys[] = {
    {.key = "ca_file",   .type = CFG_PATH, .offset = offsetof(struct cfg_tls, ca_file)},
    {.key = "cert_file", .type = CFG_PATH, .offset = offsetof(struct cfg_tls, cert_file)},
    {.key = "key_file",  .type = CFG_PATH, .offset = offsetof(struct cfg_tls, key_file)},
    {.key = "verify",    .type = CFG_BOOL, .offset = offsetof(struct cfg_tls, verify), .def = "true"},
    CFG_END,
};

const struct cfg_key cfg_https_keys[] = {
    {.key = "cert_file", .type = CFG_PATH, .offset = offsetof(struct cfg_https, cert_file), .required = true},
    {.key = "key_file",  .type = CFG_PATH, .offset = offsetof(struct cfg_https, key_file), .required = true},
    CFG_END,
};

#define HL(k) offsetof(struct cfg_http_limits, k)
const struct cfg_key cfg_http_limit_keys[] = {
    {.key = "max",                 .type = CFG_INT,      .offset = HL(max), .min = 8, .max = 20000},
    {.key = "per_address",         .type = CFG_INT,      .offset = HL(per_address), .min = 1, .max = 20000},
    {.key = "pending",             .type = CFG_INT,      .offset = HL(pending), .min = 1, .max = 20000},
    {.key = "pending_per_address", .type = CFG_INT,      .offset = HL(pending_per_address), .min = 1, .max = 20000},
    {.key = "header_timeout",      .type = CFG_DURATION, .offset = HL(header_timeout_ms), .min = 500, .max = 600000},
    {.key = "body_timeout",        .type = CFG_DURATION, .offset = HL(body_timeout_ms), .min = 500, .max = 3600000},
    CFG_END,
};
#undef HL
/* clang-format on */

const char *cfg_enum_name(const struct cfg_enum *e, int value)
{
    for (; e && e->name; e++)
        if (e->value == value)
            return e->name;
    return "?";
}

size_t cfg_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    size_t d[41][41];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            size_t x = d[i - 1][j] + 1, y = d[i][j - 1] + 1;
            d[i][j] = c < x ? (c < y ? c : y) : (x < y ? x : y);
        }
    return d[la][lb];
}

static void report(struct walk *w, struct fy_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct walk *w, struct fy_node *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fy_node_report(n, FYET_ERROR, "%s", msg);
    w->errors++;
}

void cfg_report(struct fy_node *map, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct fy_node *at = map;
    if (map && key && fy_node_is_mapping(map)) {
        struct fy_node *v = fy_node_mapping_lookup_by_string(map, key, FY_NT);
        if (v)
            at = v;
    }
    if (at)
        fy_node_report(at, FYET_ERROR, "%s", msg);
    else
        fprintf(stderr, "error: %s\n", msg);
}

static bool in_range(const struct cfg_key *k, double v)
{
    return !(k->min < k->max) || (v >= k->min && v <= k->max);
}

static void range_text(const struct cfg_key *k, char *buf, size_t n)
{
    if (k->type == CFG_DURATION)
        snprintf(buf, n, "between %.0fms and %.0fms", k->min, k->max);
    else
        snprintf(buf, n, "between %g and %g", k->min, k->max);
}

/* Parses scalar text for key k into obj. Returns NULL or a static-ish error
 * message written into err. */
static const char *parse_scalar(struct walk *w, const struct cfg_key *k, const char *text,
                                void *obj, char *err, size_t errn)
{
    char rng[96];
    switch (k->type) {
    case CFG_STR:
        free(*FIELD(obj, k->offset, char *));
        *FIELD(obj, k->offset, char *) = ch_xstrdup(text);
        return NULL;
    case CFG_ID:
        if (!ch_valid_id(text)) {
            snprintf(err, errn, "key '%s': '%s' is not %s", k->key, text, type_name(k->type));
            return err;
        }
        free(*FIELD(obj, k->offset, char *));
        *FIELD(obj, k->offset, char *) = ch_xstrdup(text);
        return NULL;
    case CFG_NAME:
        if (!ch_valid_name(text)) {
            snprintf(err, errn, "key '%s': '%s' is not %s", k->key, text, type_name(k->type));
            return err;
        }
        free(*FIELD(obj, k->offset, char *));
        *FIELD(obj, k->offset, char *) = ch_xstrdup(text);
        return NULL;
    case CFG_TEXT: {
        struct cfg_text *t = FIELD(obj, k->offset, struct cfg_text);
        free(t->text);
        t->text = ch_xstrdup(text);
        return NULL;
    }
    case CFG_PATH:
        free(*FIELD(obj, k->offset, char *));
        *FIELD(obj, k->offset, char *) = cfg_resolve_path(w->file ? w->file->dir : NULL, text);
        return NULL;
    case CFG_INT: {
        long long v;
        if (ch_parse_int(text, &v) != 0) {
            snprintf(err, errn, "key '%s': expected %s, got '%s'", k->key, type_name(k->type),
                     text);
            return err;
        }
        if (!in_range(k, (double)v)) {
            range_text(k, rng, sizeof rng);
            snprintf(err, errn, "key '%s': %lld is out of range (%s)", k->key, v, rng);
            return err;
        }
        *FIELD(obj, k->offset, int64_t) = v;
        return NULL;
    }
    case CFG_FLOAT: {
        char *end;
        errno = 0;
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v)) {
            snprintf(err, errn, "key '%s': expected %s, got '%s'", k->key, type_name(k->type),
                     text);
            return err;
        }
        if (!in_range(k, v)) {
            range_text(k, rng, sizeof rng);
            snprintf(err, errn, "key '%s': %g is out of range (%s)", k->key, v, rng);
            return err;
        }
        *FIELD(obj, k->offset, double) = v;
        return NULL;
    }
    case CFG_BOOL: {
        static const char *const yes[] = {"true", "yes", "on"};
        static const char *const no[] = {"false", "no", "off"};
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(text, yes[i]) == 0) {
                *FIELD(obj, k->offset, bool) = true;
                return NULL;
            }
            if (strcasecmp(text, no[i]) == 0) {
                *FIELD(obj, k->offset, bool) = false;
                return NULL;
            }
        }
        snprintf(err, errn, "key '%s': expected true or false, got '%s'", k->key, text);
        return err;
    }
    case CFG_DURATION: {
        int64_t ms;
        if (ch_parse_duration_ms(text, &ms) != 0) {
            snprintf(err, errn, "key '%s': expected %s, got '%s'", k->key, type_name(k->type),
                     text);
            return err;
        }
        if (!in_range(k, (double)ms)) {
            range_text(k, rng, sizeof rng);
            snprintf(err, errn, "key '%s': %s is out of range (%s)", k->key, text, rng);
            return err;
        }
        *FIELD(obj, k->offset, int64_t) = ms;
        return NULL;
    }
    case CFG_ENUM: {
        for (const struct cfg_enum *e = k->enums; e && e->name; e++) {
            if (strcmp(e->name, text) == 0) {
                *FIELD(obj, k->offset, int) = e->value;
                return NULL;
            }
        }
        const char *best = NULL;
        size_t bd = 3;
        for (const struct cfg_enum *e = k->enums; e && e->name && !isdigit((unsigned char)*text);
             e++) {
            size_t d = cfg_edit_distance(text, e->name);
            if (d < bd) {
                bd = d;
                best = e->name;
            }
        }
        size_t off = (size_t)snprintf(err, errn, "key '%s': '%s' is not one of:", k->key, text);
        for (const struct cfg_enum *e = k->enums; e && e->name && off < errn; e++)
            off += (size_t)snprintf(err + off, errn - off, " %s", e->name);
        if (best && off < errn)
            snprintf(err + off, errn - off, " (did you mean '%s'?)", best);
        return err;
    }
    default:
        snprintf(err, errn, "key '%s': expected %s", k->key, type_name(k->type));
        return err;
    }
}

static void walk_map(struct walk *w, const struct cfg_key *table, struct fy_node *map, void *obj);

/* out = the keys of a, then those of b that a does not name. */
static void merge_keys(struct cfg_key out[MERGED_MAX + 1], size_t *n, const struct cfg_key *b)
{
    for (; b && b->key; b++) {
        size_t i = 0;
        while (i < *n && strcmp(out[i].key, b->key))
            i++;
        if (i < *n) {
            if (out[i].offset != b->offset || out[i].type != b->type || out[i].sub != b->sub ||
                out[i].enums != b->enums)
                abort(); /* one key, two meanings: a programming error */
            continue;
        }
        for (size_t j = 0; j < *n; j++)
            if (out[j].offset == b->offset)
                abort(); /* two keys, one field: it would be freed twice */
        if (*n == MERGED_MAX)
            abort(); /* a table this large is a programming error */
        out[(*n)++] = *b;
    }
    out[*n] = (struct cfg_key)CFG_END;
}

/* The enum of list k's variant key. */
static const struct cfg_key *variant_enum_key(const struct cfg_key *k)
{
    for (const struct cfg_key *e = k->sub; e->key; e++)
        if (!strcmp(e->key, k->variant_key))
            return e;
    abort(); /* a variant_key not in .sub is a programming error */
}

/* The keys of an element of list k: .sub and those of variant v, or of
 * every variant when v is NULL (its variant key is missing or bad: every
 * other key is still checked). */
static const struct cfg_key *variant_table(const struct cfg_key *k, const struct cfg_variant *v,
                                           struct cfg_key out[MERGED_MAX + 1])
{
    size_t n = 0;
    merge_keys(out, &n, k->sub);
    size_t common = n;
    for (const struct cfg_variant *x = k->variants; x->keys; x++)
        if (!v || x == v)
            merge_keys(out, &n, x->keys);
    if (!v) /* which keys a variant requires is unknown */
        for (size_t i = common; i < n; i++)
            out[i].required = false;
    return out;
}

/* The variant of list k's element item, by its variant key; NULL if none. */
static const struct cfg_variant *variant_of(const struct cfg_key *k, struct fy_node *item)
{
    struct fy_node *t = fy_node_mapping_lookup_by_string(item, k->variant_key, FY_NT);
    const char *text = t && fy_node_is_scalar(t) ? fy_node_get_scalar0(t) : NULL;
    if (!text)
        return NULL;
    for (const struct cfg_enum *e = variant_enum_key(k)->enums; e->name; e++)
        if (!strcmp(e->name, text))
            for (const struct cfg_variant *v = k->variants; v->keys; v++)
                if (v->value == e->value)
                    return v;
    return NULL;
}

/* Reports key, unknown to the element's variant, as a key of others when
 * it is one. Returns false if it is no variant's. */
static bool report_other_variant(struct walk *w, struct fy_node *kn, const char *key)
{
    const struct cfg_key *ek = variant_enum_key(w->vlist);
    char owners[160] = "";
    size_t len = 0;
    for (const struct cfg_variant *v = w->vlist->variants; v->keys; v++)
        for (const struct cfg_key *x = v->keys; x->key; x++)
            if (!strcmp(x->key, key) && len < sizeof owners) {
                int k = snprintf(owners + len, sizeof owners - len, "%s%s", len ? ", " : "",
                                 cfg_enum_name(ek->enums, v->value));
                len += k > 0 ? (size_t)k : 0;
            }
    if (!len)
        return false;
    report(w, kn, "key '%s' does not apply to %s '%s' (it is a key of %s)", key,
           w->vlist->variant_key, cfg_enum_name(ek->enums, w->variant->value), owners);
    return true;
}

/* A locale tag as BCP 47 writes the common ones: a 2-3 letter language,
 * then subtags of 2-8 letters or digits ("zh-CN", "en", "zh-Hans-CN"). */
static bool locale_ok(const char *s)
{
    size_t i = 0;
    while (isalpha((unsigned char)s[i]))
        i++;
    if (i < 2 || i > 3)
        return false;
    while (s[i] == '-') {
        size_t j = ++i;
        while (isalnum((unsigned char)s[i]))
            i++;
        if (i - j < 2 || i - j > 8)
            return false;
    }
    return s[i] == '\0';
}

/* The mapping form of a CFG_TEXT: locale -> string. */
static void walk_text_map(struct walk *w, const struct cfg_key *k, struct fy_node *v,
                          struct cfg_text *t)
{
    int n = fy_node_mapping_item_count(v);
    t->locales.items = ch_xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct cfg_text_locale));
    t->locales.n = 0;
    void *it = NULL;
    struct fy_node_pair *p;
    while ((p = fy_node_mapping_iterate(v, &it)) != NULL) {
        struct fy_node *kn = fy_node_pair_key(p), *vn = fy_node_pair_value(p);
        const char *loc = kn && fy_node_is_scalar(kn) ? fy_node_get_scalar0(kn) : NULL;
        const char *text = vn && fy_node_is_scalar(vn) ? fy_node_get_scalar0(vn) : NULL;
        if (!loc || !locale_ok(loc)) {
            report(w, kn ? kn : v, "key '%s': '%s' is not a locale (e.g. zh-CN, en)", k->key,
                   loc ? loc : "?");
            continue;
        }
        if (!text) {
            report(w, vn ? vn : kn, "key '%s': the %s text must be a string", k->key, loc);
            continue;
        }
        struct cfg_text_locale *tl = &((struct cfg_text_locale *)t->locales.items)[t->locales.n++];
        tl->locale = ch_xstrdup(loc);
        tl->text = ch_xstrdup(text);
    }
}

static void walk_value(struct walk *w, const struct cfg_key *k, struct fy_node *v, void *obj)
{
    char err[512];
    switch (k->type) {
    case CFG_TEXT:
        if (fy_node_is_mapping(v)) {
            walk_text_map(w, k, v, FIELD(obj, k->offset, struct cfg_text));
            return;
        }
        break;
    case CFG_NODE:
        *FIELD(obj, k->offset, struct fy_node *) = v;
        return;
    case CFG_MAP:
        if (!fy_node_is_mapping(v)) {
            report(w, v, "key '%s': expected a mapping", k->key);
            return;
        }
        walk_map(w, k->sub, v, FIELD(obj, k->offset, char));
        return;
    case CFG_PARAMS: {
        if (!fy_node_is_mapping(v)) {
            report(w, v, "key '%s': expected %s", k->key, type_name(k->type));
            return;
        }
        struct cfg_list *l = FIELD(obj, k->offset, struct cfg_list);
        int n = fy_node_mapping_item_count(v);
        l->items = ch_xcalloc((size_t)(n > 0 ? n : 1), sizeof(struct cfg_param));
        l->n = 0;
        void *it = NULL;
        struct fy_node_pair *p;
        while ((p = fy_node_mapping_iterate(v, &it)) != NULL) {
            struct fy_node *kn = fy_node_pair_key(p), *vn = fy_node_pair_value(p);
            const char *name = kn && fy_node_is_scalar(kn) ? fy_node_get_scalar0(kn) : NULL;
            const char *text = vn && fy_node_is_scalar(vn) ? fy_node_get_scalar0(vn) : NULL;
            if (!name || !ch_valid_id(name)) {
                report(w, kn ? kn : v, "key '%s': parameter names are identifiers", k->key);
                continue;
            }
            char *end;
            errno = 0;
            double d = text ? strtod(text, &end) : 0;
            if (!text || !*text || errno || *end || !isfinite(d)) {
                report(w, vn ? vn : kn, "key '%s': parameter '%s' must be a number", k->key, name);
                continue;
            }
            struct cfg_param *cp = &((struct cfg_param *)l->items)[l->n++];
            cp->name = ch_xstrdup(name);
            cp->value = d;
            cp->node = vn;
        }
        return;
    }
    case CFG_LIST:
    case CFG_STRLIST: {
        if (!fy_node_is_sequence(v)) {
            report(w, v, "key '%s': expected %s", k->key, type_name(k->type));
            return;
        }
        struct cfg_list *l = FIELD(obj, k->offset, struct cfg_list);
        size_t esz = k->type == CFG_LIST ? k->elem_size : sizeof(char *);
        int n = fy_node_sequence_item_count(v);
        l->items = ch_xcalloc((size_t)(n > 0 ? n : 1), esz);
        l->n = 0;
        void *it = NULL;
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(v, &it)) != NULL) {
            char *elem = (char *)l->items + l->n * esz;
            if (k->type == CFG_STRLIST) {
                const char *s = fy_node_is_scalar(item) ? fy_node_get_scalar0(item) : NULL;
                if (!s) {
                    report(w, item, "key '%s': list items must be strings", k->key);
                    continue;
                }
                *(char **)(void *)elem = ch_xstrdup(s);
                l->n++;
                continue;
            }
            if (!fy_node_is_mapping(item)) {
                report(w, item, "key '%s': list items must be mappings", k->key);
                continue;
            }
            if (k->node_offset >= 0)
                *FIELD(elem, (size_t)k->node_offset, struct fy_node *) = item;
            if (k->variants) {
                struct cfg_key merged[MERGED_MAX + 1];
                struct walk saved = *w;
                w->vmap = item;
                w->vlist = k;
                w->variant = variant_of(k, item);
                walk_map(w, variant_table(k, w->variant, merged), item, elem);
                w->vmap = saved.vmap;
                w->vlist = saved.vlist;
                w->variant = saved.variant;
            } else {
                walk_map(w, k->sub, item, elem);
            }
            l->n++;
        }
        return;
    }
    default:
        break;
    }
    if (!fy_node_is_scalar(v)) {
        report(w, v, "key '%s': expected %s", k->key, type_name(k->type));
        return;
    }
    const char *text = fy_node_get_scalar0(v);
    /* a string may be empty, unless it is required (a serial port, a host) */
    if (!text || (!*text && (k->required ||
                             (k->type != CFG_STR && k->type != CFG_PATH && k->type != CFG_TEXT)))) {
        report(w, v, "key '%s' has no value", k->key);
        return;
    }
    const char *msg = parse_scalar(w, k, text, obj, err, sizeof err);
    if (msg)
        report(w, v, "%s", msg);
}

static void walk_map(struct walk *w, const struct cfg_key *table, struct fy_node *map, void *obj)
{
    size_t nkeys = 0;
    while (table[nkeys].key)
        nkeys++;
    bool seen[64] = {false};
    if (nkeys > CH_ARRAY_LEN(seen))
        abort(); /* a table this large is a programming error */

    void *it = NULL;
    struct fy_node_pair *p;
    while ((p = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *kn = fy_node_pair_key(p);
        struct fy_node *vn = fy_node_pair_value(p);
        const char *key = kn && fy_node_is_scalar(kn) ? fy_node_get_scalar0(kn) : NULL;
        if (!key) {
            report(w, kn ? kn : map, "keys must be plain strings");
            continue;
        }
        size_t i;
        for (i = 0; i < nkeys; i++)
            if (strcmp(table[i].key, key) == 0)
                break;
        if (i == nkeys && map == w->vmap && w->variant && report_other_variant(w, kn, key))
            continue;
        if (i == nkeys) {
            const char *best = NULL;
            size_t bd = 3;
            for (size_t j = 0; j < nkeys; j++) {
                size_t d = cfg_edit_distance(key, table[j].key);
                if (d < bd) {
                    bd = d;
                    best = table[j].key;
                }
            }
            if (best)
                report(w, kn, "unknown key '%s' (did you mean '%s'?)", key, best);
            else
                report(w, kn, "unknown key '%s'", key);
            continue;
        }
        seen[i] = true;
        if (!vn || (fy_node_is_scalar(vn) && fy_node_get_scalar0(vn) == NULL)) {
            report(w, kn, "key '%s' has no value", key);
            continue;
        }
        walk_value(w, &table[i], vn, obj);
    }

    char err[512];
    for (size_t i = 0; i < nkeys; i++) {
        if (seen[i])
            continue;
        const struct cfg_key *k = &table[i];
        if (k->required && w->absent) {
            continue; /* an absent optional section: its required keys matter only if given */
        }
        if (k->required) {
            /* point at the first line of the mapping, not its whole extent */
            void *fit = NULL;
            struct fy_node_pair *first = fy_node_mapping_iterate(map, &fit);
            report(w, first ? fy_node_pair_key(first) : map, "missing required key '%s'", k->key);
            continue;
        }
        if (k->type == CFG_MAP) {
            /* absent section: still apply the defaults of its keys */
            struct fy_document *empty = fy_document_build_from_string(NULL, "{}", FY_NT);
            if (empty) {
                w->absent++;
                walk_map(w, k->sub, fy_document_root(empty), FIELD(obj, k->offset, char));
                w->absent--;
                fy_document_destroy(empty);
            }
            continue;
        }
        if (k->def) {
            const char *msg = parse_scalar(w, k, k->def, obj, err, sizeof err);
            if (msg) {
                fprintf(stderr, "internal error: bad default: %s\n", msg);
                abort();
            }
        }
    }
}

#define CFG_FILE_MAX (4u << 20) /* a site with thousands of devices is well under this */

/* Checks the file before libfyaml sees it: its size, and that it is UTF-8
 * (YAML's encoding; libfyaml 0.8 can loop forever on invalid UTF-8 inside
 * a directive, found by fuzzing). Returns 0, or CH_ECONFIG / -errno after
 * reporting file:line:column. */
static int precheck(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        fprintf(stderr, "%s: cannot open: %s\n", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && !S_ISREG(st.st_mode)) {
        fclose(f); /* a pipe or device: reading it here would consume it */
        return 0;
    }
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || st.st_size > (off_t)CFG_FILE_MAX) {
        fclose(f);
        fprintf(stderr, "%s: error: larger than %u bytes: not a configuration file\n", path,
                CFG_FILE_MAX);
        return CH_ECONFIG;
    }
    size_t cap = (size_t)st.st_size + 1;
    unsigned char *buf = ch_xmalloc(cap);
    size_t n = fread(buf, 1, cap, f);
    int err = ferror(f);
    fclose(f);
    int rc = 0;
    if (err) {
        fprintf(stderr, "%s: cannot read\n", path);
        rc = -EIO;
    } else {
        size_t line = 1, col = 1;
        for (size_t i = 0; i < n;) {
            size_t l = ch_utf8_len(buf + i, n - i);
            if (!l || buf[i] == 0) {
                fprintf(stderr, "%s:%zu:%zu: error: not UTF-8 text (byte 0x%02x)\n", path, line,
                        col, buf[i]);
                rc = CH_ECONFIG;
                break;
            }
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
            i += l;
        }
    }
    free(buf);
    return rc;
}

int cfg_load(const char *path, const struct cfg_key *table, void *out, struct cfg_file **file_out)
{
    return cfg_load_all(path, table, out, file_out, NULL);
}

int cfg_load_all(const char *path, const struct cfg_key *table, void *out,
                 struct cfg_file **file_out, int *errors)
{
    if (errors)
        *errors = 0;
    int pre = precheck(path);
    if (pre != 0)
        return pre;

    struct fy_parse_cfg pcfg = {.flags = FYPCF_DEFAULT_PARSE};
    struct fy_document *doc = fy_document_build_from_file(&pcfg, path);
    if (!doc) {
        fprintf(stderr, "%s: not valid YAML (see the error above)\n", path);
        return CH_ECONFIG;
    }
    struct cfg_file *f = ch_xcalloc(1, sizeof *f);
    f->doc = doc;
    char *tmp = ch_xstrdup(path);
    char abs[PATH_MAX];
    const char *d = dirname(tmp);
    f->dir = ch_xstrdup(realpath(d, abs) ? abs : d);
    free(tmp);

    struct walk w = {.file = f, .errors = 0};
    struct fy_node *root = fy_document_root(doc);
    if (!root || !fy_node_is_mapping(root)) {
        if (root)
            report(&w, root, "the file must be a mapping of keys");
        else {
            fprintf(stderr, "%s: the file is empty\n", path);
            w.errors++;
        }
    } else {
        walk_map(&w, table, root, out);
        if (errors && w.errors && file_out) { /* the caller checks on, and frees */
            *errors = w.errors;
            *file_out = f;
            return 0;
        }
    }
    if (w.errors) {
        fprintf(stderr, "%s: %d error%s\n", path, w.errors, w.errors == 1 ? "" : "s");
        cfg_free(table, out); /* nothing half-loaded stays allocated */
        cfg_file_close(f);
        return CH_ECONFIG;
    }
    if (file_out)
        *file_out = f;
    else
        cfg_file_close(f);
    return 0;
}

int cfg_parse_node(struct fy_node *map, const struct cfg_key *table, void *out)
{
    struct walk w = {.file = NULL, .errors = 0};
    if (map && fy_node_is_mapping(map)) {
        walk_map(&w, table, map, out);
    } else if (map) {
        report(&w, map, "expected a mapping of keys");
    } else {
        fprintf(stderr, "error: expected a mapping of keys\n");
        w.errors++;
    }
    return w.errors ? CH_ECONFIG : 0;
}

struct fy_node *cfg_file_root(const struct cfg_file *f)
{
    return fy_document_root(f->doc);
}

const char *cfg_file_dir(const struct cfg_file *f)
{
    return f->dir;
}

char *cfg_resolve_path(const char *dir, const char *rel)
{
    if (rel[0] == '/' || !dir)
        return ch_xstrdup(rel);
    size_t len = strlen(dir) + strlen(rel) + 2;
    char *v = ch_xmalloc(len);
    snprintf(v, len, "%s/%s", dir, rel);
    return v;
}

const char *cfg_text_get(const struct cfg_text *t, const char *locale)
{
    const struct cfg_text_locale *l = t->locales.items, *lang = NULL, *en = NULL;
    size_t ll = locale ? strcspn(locale, "-") : 0;
    for (size_t i = 0; i < t->locales.n; i++) {
        if (locale && !strcmp(l[i].locale, locale))
            return l[i].text;
        if (!lang && ll && !strncmp(l[i].locale, locale, ll) &&
            (l[i].locale[ll] == '\0' || l[i].locale[ll] == '-'))
            lang = &l[i];
        if (!en && !strncmp(l[i].locale, "en", 2) &&
            (l[i].locale[2] == '\0' || l[i].locale[2] == '-'))
            en = &l[i];
    }
    if (lang)
        return lang->text;
    if (t->text)
        return t->text;
    if (en)
        return en->text;
    return t->locales.n ? l[0].text : NULL;
}

void cfg_file_close(struct cfg_file *f)
{
    if (!f)
        return;
    fy_document_destroy(f->doc);
    free(f->dir);
    free(f);
}

void cfg_free(const struct cfg_key *table, void *obj)
{
    for (const struct cfg_key *k = table; k->key; k++) {
        switch (k->type) {
        case CFG_STR:
        case CFG_ID:
        case CFG_NAME:
        case CFG_PATH: {
            char **p = FIELD(obj, k->offset, char *);
            free(*p);
            *p = NULL;
            break;
        }
        case CFG_TEXT: {
            struct cfg_text *t = FIELD(obj, k->offset, struct cfg_text);
            for (size_t i = 0; i < t->locales.n; i++) {
                free(((struct cfg_text_locale *)t->locales.items)[i].locale);
                free(((struct cfg_text_locale *)t->locales.items)[i].text);
            }
            free(t->locales.items);
            free(t->text);
            memset(t, 0, sizeof *t);
            break;
        }
        case CFG_MAP:
            cfg_free(k->sub, FIELD(obj, k->offset, char));
            break;
        case CFG_PARAMS: {
            struct cfg_list *l = FIELD(obj, k->offset, struct cfg_list);
            for (size_t i = 0; i < l->n; i++)
                free(((struct cfg_param *)l->items)[i].name);
            free(l->items);
            l->items = NULL;
            l->n = 0;
            break;
        }
        case CFG_LIST:
        case CFG_STRLIST: {
            struct cfg_list *l = FIELD(obj, k->offset, struct cfg_list);
            struct cfg_key merged[MERGED_MAX + 1];
            /* with variants: every variant's keys (the element's own
               variant may be unknown after an error; the others are unset) */
            const struct cfg_key *sub = k->variants ? variant_table(k, NULL, merged) : k->sub;
            for (size_t i = 0; i < l->n; i++) {
                if (k->type == CFG_LIST)
                    cfg_free(sub, (char *)l->items + i * k->elem_size);
                else
                    free(((char **)l->items)[i]);
            }
            free(l->items);
            l->items = NULL;
            l->n = 0;
            break;
        }
        default:
            break;
        }
    }
}

const struct cfg_param *cfg_param_find(const struct cfg_list *params, const char *name)
{
    for (size_t i = 0; params && i < params->n; i++) {
        const struct cfg_param *p = &((const struct cfg_param *)params->items)[i];
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}
