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
 * kept in the loaded table; a reload starts the buckets full again. */
#ifndef CAREHUB_TOKENS_H
#define CAREHUB_TOKENS_H

#include "cfg.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum token_role { ROLE_STAFF, ROLE_OPERATOR, ROLE_REGULATOR, ROLE_ADMIN };
const char *token_role_name(int role);

/* Raw series a regulator may read (bit mask). */
enum { GRANT_HEALTH = 1, GRANT_LOCATION = 2 };

struct token {
    char *name;             /* who, in the audit log */
    char *sha256;           /* 64 lower-case hex */
    int role;               /* enum token_role */
    struct cfg_list sites;  /* char *: site ids, or "*" (every site) */
    char *district;         /* prefix of site ids, instead of sites */
    struct cfg_list grants; /* char *: "health", "location" */
    int64_t rate;           /* requests per second; 0: the hub's default */
    struct fy_node *node;
    /* derived */
    unsigned grant_mask;
    bool all_sites;
    double bucket;     /* rate limiter: tokens left */
    int64_t bucket_ms; /* when it was last filled */
};

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

/* Whether site is in the token's scope. */
bool token_in_scope(const struct token *k, const char *site);

/* A new random token ("chk_" and 43 base64url characters: 256 bits) in
 * out, and its SHA-256 hex in hash. */
void tokens_generate(char out[48], char hash[65]);

/* SHA-256 of s as 64 lower-case hex characters. */
void tokens_sha256_hex(const char *s, size_t len, char out[65]);

#endif
