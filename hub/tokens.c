#include "tokens.h"
#include "codec.h"
#include "err.h"
#include "util.h"

#include <arpa/inet.h>
#include <libfyaml.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define BURST_FACTOR  2
#define PAY_RESERVE_S 1 /* what long requests leave: a second of the token's rate */

const struct cfg_enum tokens_roles[] = {{"staff", ROLE_STAFF},
                                        {"operator", ROLE_OPERATOR},
                                        {"regulator", ROLE_REGULATOR},
                                        {"admin", ROLE_ADMIN},
                                        {NULL, 0}};

const char *token_role_name(int role)
{
    return cfg_enum_name(tokens_roles, role);
}

/* clang-format off */
#define T(k) offsetof(struct token, k)
static const struct cfg_key token_keys[] = {
    {.key = "name",     .type = CFG_ID,      .offset = T(name), .required = true},
    {.key = "sha256",   .type = CFG_STR,     .offset = T(sha256), .required = true},
    TOKENS_SCOPE_KEYS(T),
    CFG_END,
};
#undef T

static const struct cfg_key file_keys[] = {
    {.key = "tokens", .type = CFG_LIST, .offset = offsetof(struct tokens, list), .required = true,
     .sub = token_keys, .elem_size = sizeof(struct token), .node_offset = offsetof(struct token, node)},
    CFG_END,
};
/* clang-format on */

static struct token *at(const struct tokens *t, size_t i)
{
    return &((struct token *)t->list.items)[i];
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static bool segment_separator(char c)
{
    return c && strchr(TOKENS_SEGMENT_SEPARATORS, c) != NULL;
}

/* The length of district without the separators at its end. */
static size_t district_len(const char *district)
{
    size_t n = strlen(district);
    while (n > 0 && segment_separator(district[n - 1]))
        n--;
    return n;
}

/* A district: one or more whole segments of site ids, itself a site id once
 * the separators at its end are cut off. */
static bool valid_district(const char *s)
{
    size_t n = district_len(s);
    char id[CH_ID_MAX];
    if (n == 0 || n >= sizeof id)
        return false;
    memcpy(id, s, n);
    id[n] = '\0';
    return ch_valid_id(id);
}

bool tokens_valid_district(const char *district)
{
    return valid_district(district);
}

int tokens_check_scope(struct token *k, tokens_report_fn *report, void *ctx)
{
    int errors = 0;
    char msg[256];
    bool has_sites = k->sites.n > 0, has_district = k->district && k->district[0];
    if (has_sites == has_district) {
        snprintf(msg, sizeof msg,
                 "'%s': give either 'sites' (a list, or [\"*\"]) or 'district' (the leading "
                 "segments of site ids)",
                 k->name);
        report(ctx, has_sites ? "district" : "sites", msg);
        errors++;
    }
    if (has_district && !valid_district(k->district)) {
        snprintf(msg, sizeof msg,
                 "key 'district': '%.64s' is not whole segments of a site id (\"cq-yz\" for "
                 "cq-yz-001, cq-yz-002, ...)",
                 k->district);
        report(ctx, "district", msg);
        errors++;
    } else if (has_district) {
        k->district[district_len(k->district)] = '\0'; /* "cq-yz-" -> "cq-yz" */
    }
    k->all_sites = false;
    for (size_t j = 0; j < k->sites.n; j++) {
        const char *s = ((char **)k->sites.items)[j];
        if (!strcmp(s, "*")) {
            k->all_sites = true;
        } else if (!ch_valid_id(s)) {
            snprintf(msg, sizeof msg, "key 'sites': '%.64s' is not a site id", s);
            report(ctx, "sites", msg);
            errors++;
        }
    }
    k->grant_mask = 0;
    for (size_t j = 0; j < k->grants.n; j++) {
        const char *g = ((char **)k->grants.items)[j];
        if (!strcmp(g, "health")) {
            k->grant_mask |= GRANT_HEALTH;
        } else if (!strcmp(g, "location")) {
            k->grant_mask |= GRANT_LOCATION;
        } else {
            snprintf(msg, sizeof msg, "key 'grants': '%.64s' is not health or location", g);
            report(ctx, "grants", msg);
            errors++;
        }
    }
    return errors;
}

void tokens_report_at_node(void *node, const char *key, const char *msg)
{
    cfg_report(node, key, "%s", msg);
}

void tokens_bucket_fill(struct token *k, int64_t default_rate)
{
    k->bucket = (double)(k->rate ? k->rate : default_rate) * BURST_FACTOR;
    k->bucket_ms = ch_mono_ms();
}

static int check(struct tokens *t)
{
    int errors = 0;
    for (size_t i = 0; i < t->list.n; i++) {
        struct token *k = at(t, i);
        if (!is_hex64(k->sha256)) {
            cfg_report(k->node, "sha256",
                       "key 'sha256': 64 lower-case hex digits expected (care-hub --new-token "
                       "prints them)");
            errors++;
        }
        errors += tokens_check_scope(k, tokens_report_at_node, k->node);
        for (size_t j = 0; j < i; j++) {
            const struct token *o = at(t, j);
            if (!strcmp(o->name, k->name)) {
                cfg_report(k->node, "name", "key 'name': '%s' is used twice", k->name);
                errors++;
            }
            if (!strcmp(o->sha256, k->sha256)) {
                cfg_report(k->node, "sha256", "key 'sha256': the same token as '%s'", o->name);
                errors++;
            }
        }
        tokens_bucket_fill(k, t->default_rate);
    }
    return errors;
}

int tokens_load(const char *path, int64_t default_rate, struct tokens **out)
{
    *out = NULL;
    struct tokens *t = ch_xcalloc(1, sizeof *t);
    t->default_rate = default_rate;
    struct cfg_file *f = NULL;
    int rc = cfg_load(path, file_keys, t, &f);
    if (rc) {
        free(t);
        return rc;
    }
    int errors = check(t);
    cfg_file_close(f);
    for (size_t i = 0; i < t->list.n; i++)
        at(t, i)->node = NULL; /* the document is gone */
    if (errors) {
        fprintf(stderr, "%s: %d error%s\n", path, errors, errors == 1 ? "" : "s");
        cfg_free(file_keys, t);
        free(t);
        return CH_ECONFIG;
    }
    pthread_mutex_init(&t->lock, NULL);
    *out = t;
    return 0;
}

void tokens_free(struct tokens *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    cfg_free(file_keys, t);
    free(t);
}

void tokens_sha256_hex(const char *s, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(s, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

const struct token *tokens_find(struct tokens *t, const char *secret)
{
    char h[65];
    tokens_sha256_hex(secret, strlen(secret), h);
    const struct token *found = NULL;
    for (size_t i = 0; i < t->list.n; i++) {
        const struct token *k = at(t, i);
        unsigned diff = 0;
        for (int j = 0; j < 64; j++)
            diff |= (unsigned)(h[j] ^ k->sha256[j]);
        if (diff == 0)
            found = k;
    }
    return found;
}

/* ---- rate limits ------------------------------------------------------------------------- */

/* Fills bucket *b, last filled at *ms, at rate a second up to cap, as of mono_ms. */
static void refill(double *b, int64_t *ms, double rate, double cap, int64_t mono_ms)
{
    if (mono_ms > *ms) {
        *b += rate * (double)(mono_ms - *ms) / 1000.0;
        *ms = mono_ms;
    }
    if (*b > cap)
        *b = cap;
}

static double rate_of(int64_t default_rate, const struct token *k)
{
    return (double)(k->rate ? k->rate : default_rate);
}

bool tokens_bucket_take(pthread_mutex_t *lock, const struct token *k, int64_t default_rate,
                        int64_t mono_ms, int *retry_s)
{
    struct token *m = (struct token *)k;
    double rate = rate_of(default_rate, m);
    pthread_mutex_lock(lock);
    refill(&m->bucket, &m->bucket_ms, rate, rate * BURST_FACTOR, mono_ms);
    bool ok = m->bucket >= 1.0;
    if (ok)
        m->bucket -= 1.0;
    else if (retry_s)
        *retry_s = (int)((1.0 - m->bucket) / rate) + 1;
    pthread_mutex_unlock(lock);
    return ok;
}

bool tokens_take(struct tokens *t, const struct token *k, int64_t mono_ms, int *retry_s)
{
    return tokens_bucket_take(&t->lock, k, t->default_rate, mono_ms, retry_s);
}

int tokens_bucket_pay(pthread_mutex_t *lock, struct token *m, int64_t default_rate, double *owed,
                      int64_t max_wait_ms, int64_t mono_ms, int64_t *wait_ms)
{
    double rate = rate_of(default_rate, m), reserve = rate * PAY_RESERVE_S;
    pthread_mutex_lock(lock);
    refill(&m->bucket, &m->bucket_ms, rate, rate * BURST_FACTOR, mono_ms);
    double spare = m->bucket > reserve ? m->bucket - reserve : 0.0;
    double take = spare < *owed ? spare : *owed;
    double rest = *owed - take;
    int64_t wait = rest > 1e-9 ? (int64_t)(rest / rate * 1000.0) + 1 : 0;
    int rc = 0;
    if (wait > max_wait_ms) {
        rc = CH_EFULL;
    } else {
        m->bucket -= take;
        *owed = wait ? rest : 0.0;
    }
    pthread_mutex_unlock(lock);
    *wait_ms = wait;
    return rc;
}

int tokens_pay(struct tokens *t, const char *name, double *owed, int64_t max_wait_ms,
               int64_t mono_ms, int64_t *wait_ms)
{
    *wait_ms = 0;
    struct token *m = NULL;
    for (size_t i = 0; i < t->list.n && !m; i++)
        if (!strcmp(at(t, i)->name, name))
            m = at(t, i);
    if (!m)
        return CH_ENOTFOUND;
    return tokens_bucket_pay(&t->lock, m, t->default_rate, owed, max_wait_ms, mono_ms, wait_ms);
}

bool token_in_scope(const struct token *k, const char *site)
{
    if (k->all_sites)
        return true;
    if (k->district && k->district[0])
        return tokens_district_covers(k->district, site);
    for (size_t i = 0; i < k->sites.n; i++)
        if (!strcmp(((char **)k->sites.items)[i], site))
            return true;
    return false;
}

bool tokens_district_covers(const char *district, const char *site)
{
    size_t n = district_len(district);
    return n > 0 && strncmp(site, district, n) == 0 && (!site[n] || segment_separator(site[n]));
}

void tokens_generate(char out[48], char hash[65])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    memcpy(out, "chk_", 4);
    for (int i = 0; i < 43; i++) { /* 43 x 6 bits = 258 > 256 */
        int bit = i * 6;
        unsigned v = ((unsigned)raw[bit / 8] << 8 | raw[bit / 8 + 1]) >> (10 - bit % 8);
        out[4 + i] = b64[v & 63];
    }
    out[47] = '\0';
    tokens_sha256_hex(out, 47, hash);
    explicit_bzero(raw, sizeof raw);
}

/* ---- requests without a valid token, per address ------------------------------------------ */

/* One address's bucket of refusals. The table is a set-associative cache:
 * an address lives in one set of TOKENS_ADDR_WAYS entries, chosen by a mix
 * of its bytes with a random seed (no one can aim addresses at one set), so
 * a look-up reads 8 entries, never 4096. */
struct addr_entry {
    unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 cut to its /64 */
    bool used;
    double bucket; /* refusals it may still make */
    int64_t ms;    /* when the bucket was last filled */
};

struct tokens_addrs {
    pthread_mutex_t mu;
    double rate, cap;
    uint64_t seed;
    struct addr_entry e[TOKENS_ADDR_SLOTS];
};

struct tokens_addrs *tokens_addrs_new(int64_t rate)
{
    struct tokens_addrs *t = ch_xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    t->rate = (double)rate;
    t->cap = (double)rate * TOKENS_ADDR_BURST;
    while (getrandom(&t->seed, sizeof t->seed, 0) != (ssize_t)sizeof t->seed)
        ;
    return t;
}

void tokens_addrs_free(struct tokens_addrs *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void addr_key(const char *addr, unsigned char key[16])
{
    struct in_addr a4;
    struct in6_addr a6;
    memset(key, 0xff, 16); /* not an address ("?"): one key for all such */
    if (inet_pton(AF_INET, addr, &a4) == 1) {
        memset(key, 0, 10);
        memcpy(key + 12, &a4, 4);
    } else if (inet_pton(AF_INET6, addr, &a6) == 1) {
        memcpy(key, &a6, 16);
        if (!IN6_IS_ADDR_V4MAPPED(&a6))
            memset(key + 8, 0, 8); /* one /64 is one client */
    }
}

/* The first entry of key's set. */
static struct addr_entry *addr_set(struct tokens_addrs *t, const unsigned char key[16])
{
    uint64_t h = t->seed, w;
    for (int i = 0; i < 16; i += 8) {
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    h = (h ^ (h >> 32)) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 31;
    return &t->e[(h % (TOKENS_ADDR_SLOTS / TOKENS_ADDR_WAYS)) * TOKENS_ADDR_WAYS];
}

/* key's entry, or the one it may take (free, else the fullest bucket of those
 * not blocked: one that is full has nothing to forget); NULL when every
 * entry of the set is blocked. *found says which. */
static struct addr_entry *addr_find(struct tokens_addrs *t, const unsigned char key[16],
                                    int64_t mono_ms, bool *found)
{
    struct addr_entry *set = addr_set(t, key), *victim = NULL;
    *found = false;
    for (int i = 0; i < TOKENS_ADDR_WAYS; i++) {
        struct addr_entry *e = &set[i];
        if (e->used && !memcmp(e->key, key, 16)) {
            *found = true;
            refill(&e->bucket, &e->ms, t->rate, t->cap, mono_ms);
            return e;
        }
    }
    for (int i = 0; i < TOKENS_ADDR_WAYS; i++) {
        struct addr_entry *e = &set[i];
        if (!e->used)
            return e;
        refill(&e->bucket, &e->ms, t->rate, t->cap, mono_ms);
        if (e->bucket >= 1.0 && (!victim || e->bucket > victim->bucket))
            victim = e;
    }
    return victim;
}

/* Seconds until the set of key has room or key's bucket a refusal. */
static int addr_retry(const struct tokens_addrs *t, const struct addr_entry *set)
{
    double need = 1.0;
    for (int i = 0; i < TOKENS_ADDR_WAYS; i++)
        if (1.0 - set[i].bucket < need)
            need = 1.0 - set[i].bucket;
    return (int)(need / t->rate) + 1;
}

bool tokens_addrs_take(struct tokens_addrs *t, const char *addr, int64_t mono_ms, int *retry_s)
{
    unsigned char key[16];
    addr_key(addr, key);
    pthread_mutex_lock(&t->mu);
    bool found;
    struct addr_entry *e = addr_find(t, key, mono_ms, &found);
    if (e && !found) {
        memcpy(e->key, key, 16);
        e->used = true;
        e->bucket = t->cap;
        e->ms = mono_ms;
    }
    bool limited = !e || e->bucket < 1.0; /* no entry: its set is full of blocks */
    if (!limited)
        e->bucket -= 1.0;
    else if (retry_s)
        *retry_s = e ? (int)((1.0 - e->bucket) / t->rate) + 1 : addr_retry(t, addr_set(t, key));
    pthread_mutex_unlock(&t->mu);
    return limited;
}

void tokens_addrs_refund(struct tokens_addrs *t, const char *addr, int64_t mono_ms)
{
    unsigned char key[16];
    addr_key(addr, key);
    pthread_mutex_lock(&t->mu);
    bool found;
    struct addr_entry *e = addr_find(t, key, mono_ms, &found);
    if (found)
        e->bucket = e->bucket + 1.0 < t->cap ? e->bucket + 1.0 : t->cap;
    pthread_mutex_unlock(&t->mu);
}
