#include "tokens.h"
#include "err.h"
#include "util.h"

#include <libfyaml.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define BURST_FACTOR 2

static const struct cfg_enum roles[] = {{"staff", ROLE_STAFF},
                                        {"operator", ROLE_OPERATOR},
                                        {"regulator", ROLE_REGULATOR},
                                        {"admin", ROLE_ADMIN},
                                        {NULL, 0}};

const char *token_role_name(int role)
{
    return cfg_enum_name(roles, role);
}

/* clang-format off */
#define T(k) offsetof(struct token, k)
static const struct cfg_key token_keys[] = {
    {.key = "name",     .type = CFG_ID,      .offset = T(name), .required = true},
    {.key = "sha256",   .type = CFG_STR,     .offset = T(sha256), .required = true},
    {.key = "role",     .type = CFG_ENUM,    .offset = T(role), .required = true, .enums = roles},
    {.key = "sites",    .type = CFG_STRLIST, .offset = T(sites)},
    {.key = "district", .type = CFG_STR,     .offset = T(district)},
    {.key = "grants",   .type = CFG_STRLIST, .offset = T(grants)},
    {.key = "rate",     .type = CFG_INT,     .offset = T(rate), .min = 1, .max = 100000},
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

/* A district: the start of site ids, [A-Za-z0-9_.-], 1..63 characters. */
static bool valid_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    char probe[80];
    snprintf(probe, sizeof probe, "%sx", s);
    return ch_valid_id(probe);
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
        bool has_sites = k->sites.n > 0, has_district = k->district && k->district[0];
        if (has_sites == has_district) {
            cfg_report(k->node, has_sites ? "district" : "sites",
                       "token '%s': give either 'sites' (a list, or [\"*\"]) or 'district' (a "
                       "prefix of site ids)",
                       k->name);
            errors++;
        }
        if (has_district && !valid_prefix(k->district)) {
            cfg_report(k->node, "district", "key 'district': '%s' is not the start of a site id",
                       k->district);
            errors++;
        }
        for (size_t j = 0; j < k->sites.n; j++) {
            const char *s = ((char **)k->sites.items)[j];
            if (!strcmp(s, "*"))
                k->all_sites = true;
            else if (!ch_valid_id(s)) {
                cfg_report(k->node, "sites", "key 'sites': '%s' is not a site id", s);
                errors++;
            }
        }
        for (size_t j = 0; j < k->grants.n; j++) {
            const char *g = ((char **)k->grants.items)[j];
            if (!strcmp(g, "health"))
                k->grant_mask |= GRANT_HEALTH;
            else if (!strcmp(g, "location"))
                k->grant_mask |= GRANT_LOCATION;
            else {
                cfg_report(k->node, "grants", "key 'grants': '%s' is not health or location", g);
                errors++;
            }
        }
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
        k->bucket = (double)(k->rate ? k->rate : t->default_rate) * BURST_FACTOR;
        k->bucket_ms = ch_mono_ms();
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

bool tokens_take(struct tokens *t, const struct token *k, int64_t mono_ms, int *retry_s)
{
    struct token *m = (struct token *)k;
    double rate = (double)(m->rate ? m->rate : t->default_rate);
    pthread_mutex_lock(&t->lock);
    double cap = rate * BURST_FACTOR;
    if (mono_ms > m->bucket_ms)
        m->bucket += rate * (double)(mono_ms - m->bucket_ms) / 1000.0;
    if (m->bucket > cap)
        m->bucket = cap;
    if (mono_ms > m->bucket_ms)
        m->bucket_ms = mono_ms;
    bool ok = m->bucket >= 1.0;
    if (ok)
        m->bucket -= 1.0;
    else if (retry_s)
        *retry_s = (int)((1.0 - m->bucket) / rate) + 1;
    pthread_mutex_unlock(&t->lock);
    return ok;
}

bool token_in_scope(const struct token *k, const char *site)
{
    if (k->all_sites)
        return true;
    if (k->district && k->district[0])
        return strncmp(site, k->district, strlen(k->district)) == 0;
    for (size_t i = 0; i < k->sites.n; i++)
        if (!strcmp(((char **)k->sites.items)[i], site))
            return true;
    return false;
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
