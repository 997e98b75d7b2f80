/* care-hub's tokens file loader (hub/tokens.c) on arbitrary YAML: every
 * problem is reported, nothing crashes or leaks. What it accepts is usable:
 * every entry has a 64-hex-digit hash and a scope, a lookup finds only the
 * entry with the secret's hash, and the rate limiter takes from a full
 * bucket. */
#include "fuzz.h"
#include "tokens.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int load(const char *path, void *out)
{
    return tokens_load(path, 20, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tokens *t = NULL;
    if (fuzz_load_file("tokens", data, size, load, &t) != 0) {
        CHECK(t == NULL);
        return 0;
    }
    for (size_t i = 0; i < t->list.n; i++) {
        const struct token *k = &((const struct token *)t->list.items)[i];
        CHECK(strlen(k->sha256) == 64);
        CHECK(k->sites.n > 0 || (k->district && k->district[0]));
        CHECK(!k->all_sites || token_in_scope(k, "any-site"));
        int retry = 0;
        CHECK(tokens_take(t, k, k->bucket_ms, &retry));
    }
    static const char secret[] = "chk_fuzz"; /* the hub-api-test seed's admin */
    char h[65];
    tokens_sha256_hex(secret, strlen(secret), h);
    const struct token *found = tokens_find(t, secret);
    CHECK(!found || strcmp(found->sha256, h) == 0);
    tokens_free(t);
    return 0;
}
