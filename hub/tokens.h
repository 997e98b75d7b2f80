/* Who may use care-hub's API: bearer tokens, kept hashed in a tokens file
 * (YAML; format in hub/API.md), each with a role and a scope of sites.
 *
 * Tokens are high-entropy random strings (tokens_generate), so one SHA-256
 * is the right hash: a slow password hash would make every request slow and
 * protect nothing more. A presented token is hashed and compared in constant
 * time against every entry (no early exit on the first differing byte, no
 * table lookup keyed by the secret).
 *
 * Rate limit: a token bucket per token (rate per second, burst twice that),
 * kept in the loaded table; a reload starts the buckets full again. A
 * request takes one; an export or a summary also pays for its InfluxDB
 * queries from the same bucket (tokens_pay), leaving a reserve for the
 * token's other requests.
 *
 * Requests without a valid token are limited per address (tokens_addrs):
 * each refused one (401, 404, ...) takes from the address's bucket (rate per
 * second, burst TOKENS_ADDR_BURST times that); while it is empty, the
 * address's requests without a valid token are answered 429 before any other
 * work. A request takes its place before it is answered and gets it back
 * when it was not refused (tokens_addrs_refund). A valid token is never
 * limited by its address (it has its own bucket), so one scanner behind a
 * NAT does not lock out the staff behind it.
 *
 * Bounded memory, and no eviction of a blocked address: the table has
 * TOKENS_ADDR_SLOTS entries (some 40 bytes each) in sets of
 * TOKENS_ADDR_WAYS; an address takes a free entry of its set, else the one
 * with the fullest bucket among those not blocked (a full bucket forgets
 * nothing). An entry whose bucket is empty is never taken: refusals from
 * other addresses cannot unblock one. When every entry of an address's set
 * is blocked, the new address counts as blocked too (fails closed) until the
 * first of them may refuse again: that costs requests without a valid
 * token, which are refused anyway, and nothing to those with one. */
#ifndef CAREHUB_TOKENS_H
#define CAREHUB_TOKENS_H

#include "cfg.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum token_role { ROLE_STAFF, ROLE_OPERATOR, ROLE_REGULATOR, ROLE_ADMIN };
const char *token_role_name(int role);
extern const struct cfg_enum tokens_roles[]; /* "staff", ... as a CFG_ENUM */

/* Raw series a regulator may read (bit mask). */
enum { GRANT_HEALTH = 1, GRANT_LOCATION = 2 };

struct token {
    char *name;             /* who, in the audit log */
    char *sha256;           /* 64 lower-case hex */
    int role;               /* enum token_role */
    struct cfg_list sites;  /* char *: site ids, or "*" (every site) */
    char *district;         /* whole leading segments of site ids, instead of sites; kept
                               without a trailing separator ("cq-yz-" is "cq-yz") */
    struct cfg_list grants; /* char *: "health", "location" */
    int64_t rate;           /* requests per second; 0: the hub's default */
    struct fy_node *node;
    /* derived */
    unsigned grant_mask;
    bool all_sites;
    double bucket;     /* rate limiter: tokens left */
    int64_t bucket_ms; /* when it was last filled */
};

/* The keys of a holder's role and scope, as a tokens file and a users file
 * (users.h) both spell them: T(member) is the offset of a struct token's
 * member in the entry's struct. */
#define TOKENS_SCOPE_KEYS(T)                                                                       \
    {.key = "role", .type = CFG_ENUM, .offset = T(role), .required = true, .enums = tokens_roles}, \
        {.key = "sites", .type = CFG_STRLIST, .offset = T(sites)},                                 \
        {.key = "district", .type = CFG_STR, .offset = T(district)},                               \
        {.key = "grants", .type = CFG_STRLIST, .offset = T(grants)},                               \
    {                                                                                              \
        .key = "rate", .type = CFG_INT, .offset = T(rate), .min = 1, .max = 100000                 \
    }

/* Where tokens_check_scope reports a problem: the key and the message. */
typedef void tokens_report_fn(void *ctx, const char *key, const char *msg);

/* The report of a file being loaded: cfg_report at the entry's node (ctx:
 * its struct fy_node *), file:line:column with the key. */
void tokens_report_at_node(void *node, const char *key, const char *msg);

/* Checks k's scope as loaded from TOKENS_SCOPE_KEYS (either sites or a
 * district, site ids, grants) and sets what derives from it (all_sites,
 * grant_mask, a district without its trailing separators); each problem to
 * report. Returns how many. For tokens and users alike. */
int tokens_check_scope(struct token *k, tokens_report_fn *report, void *ctx);

/* Whether district is whole segments of a site id (tokens_district_covers). */
bool tokens_valid_district(const char *district);

/* Fills k's rate bucket (a fresh entry's: its burst). */
void tokens_bucket_fill(struct token *k, int64_t default_rate);

/* tokens_take and tokens_pay on the bucket of k, an entry of any table
 * (tokens, users) whose buckets lock guards, at k's rate or default_rate. */
bool tokens_bucket_take(pthread_mutex_t *lock, const struct token *k, int64_t default_rate,
                        int64_t mono_ms, int *retry_s);
int tokens_bucket_pay(pthread_mutex_t *lock, struct token *k, int64_t default_rate, double *owed,
                      int64_t max_wait_ms, int64_t mono_ms, int64_t *wait_ms);

struct tokens {
    struct cfg_list list; /* struct token */
    pthread_mutex_t lock; /* the rate buckets */
    int64_t default_rate;
};

/* Loads and checks path (every problem reported as file:line:column with the
 * key: a bad hash, a role, a scope that is neither sites nor district, a bad
 * site id or grant, a name or hash used twice). Returns 0 with *out (caller
 * frees with tokens_free), or CH_ECONFIG / -errno. */
int tokens_load(const char *path, int64_t default_rate, struct tokens **out);
void tokens_free(struct tokens *t);

/* The entry whose hash is SHA-256(secret), or NULL. */
const struct token *tokens_find(struct tokens *t, const char *secret);

/* Rate limit: true if the token may make a request at mono_ms (one is
 * taken), else false with *retry_s, the seconds until one is available. */
bool tokens_take(struct tokens *t, const struct token *k, int64_t mono_ms, int *retry_s);

/* A long request (an export, a summary) paying for its InfluxDB queries
 * from the bucket of the token called name, at the token's rate: takes what
 * the bucket holds above a reserve of one second's requests (left for the
 * token's other requests), at most *owed, and lowers *owed by it. Returns 0
 * with *wait_ms 0 when *owed is paid (then 0), or with *wait_ms the time
 * until the rest can be (call again then); CH_EFULL, nothing taken, when
 * that would be longer than max_wait_ms; CH_ENOTFOUND when no token has that
 * name (a reload revoked it). */
int tokens_pay(struct tokens *t, const char *name, double *owed, int64_t max_wait_ms,
               int64_t mono_ms, int64_t *wait_ms);

/* The per-address limit of requests without a valid token (see above). */
#define TOKENS_ADDR_SLOTS 4096
#define TOKENS_ADDR_WAYS  8
#define TOKENS_ADDR_BURST 4 /* burst: this many seconds of the rate */

struct tokens_addrs;

/* A table that allows each address rate refusals a second. Caller frees with
 * tokens_addrs_free. Aborts on out of memory, like ch_xmalloc. */
struct tokens_addrs *tokens_addrs_new(int64_t rate);
void tokens_addrs_free(struct tokens_addrs *t);

/* A request without a valid token from addr (as inet_ntop prints it;
 * borrowed) at mono_ms, to be refused or not: takes one from the address's
 * bucket and returns false; or returns true, taking nothing, when addr is
 * over its rate (or its set is full of blocks), with *retry_s the seconds
 * until it is not. Check and take are one step: concurrent requests cannot
 * all pass on one token. */
bool tokens_addrs_take(struct tokens_addrs *t, const char *addr, int64_t mono_ms, int *retry_s);

/* Gives back what tokens_addrs_take took for a request that was not refused
 * after all (a file of the console). */
void tokens_addrs_refund(struct tokens_addrs *t, const char *addr, int64_t mono_ms);

/* Whether site is in the token's scope. */
bool token_in_scope(const struct token *k, const char *site);

/* What separates the segments of a site id ("cq-yz-001": cq, yz, 001). */
#define TOKENS_SEGMENT_SEPARATORS "-._"

/* Whether district covers site: site is district, or starts with it and
 * then a separator, so a district is whole segments ("cq-yz" covers
 * "cq-yz-001" and "cq-yz-0010"; "cq-yz-00" covers neither). Separators at
 * the end of district are ignored ("cq-yz-" is "cq-yz"); an empty district
 * covers nothing. */
bool tokens_district_covers(const char *district, const char *site);

/* A new random token ("chk_" and 43 base64url characters: 256 bits) in
 * out, and its SHA-256 hex in hash. */
void tokens_generate(char out[48], char hash[65]);

/* SHA-256 of s as 64 lower-case hex characters. */
void tokens_sha256_hex(const char *s, size_t len, char out[65]);

#endif
