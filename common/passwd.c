#include "passwd.h"
#include "log.h"
#include "util.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

char *ch_passwd_hash(const char *mod, const char *password)
{
    char *salt = crypt_gensalt_ra("$y$", 0, NULL, 0);
    if (!salt) {
        LOGE(mod, NULL, "cannot make a yescrypt salt: %s", strerror(errno));
        return NULL;
    }
    void *data = NULL;
    int size = 0;
    char *h = crypt_ra(password, salt, &data, &size);
    char *out = (h && h[0] == '$') ? ch_xstrdup(h) : NULL;
    if (!out)
        LOGE(mod, NULL, "cannot hash the password: %s", strerror(errno));
    if (data) {
        explicit_bzero(data, (size_t)size);
        free(data);
    }
    free(salt);
    return out;
}

bool ch_secret_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return false;
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

bool ch_passwd_verify(const char *password, const char *hash)
{
    void *data = NULL;
    int size = 0;
    /* crypt_ra returns a "*..." failure token, never a match, for a bad hash. */
    char *h = crypt_ra(password, hash, &data, &size);
    bool ok = h && h[0] == '$' && ch_secret_eq(h, hash);
    if (data) {
        explicit_bzero(data, (size_t)size);
        free(data);
    }
    return ok;
}

bool ch_passwd_valid_hash(const char *hash)
{
    return hash && hash[0] == '$' && strchr(hash + 1, '$') &&
           crypt_checksalt(hash) == CRYPT_SALT_OK;
}

static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char *dummy;

static void make_dummy(void)
{
    char pw[33];
    ch_random_hex(pw);
    dummy = ch_passwd_hash("passwd", pw);
    explicit_bzero(pw, sizeof pw);
}

const char *ch_passwd_dummy(void)
{
    pthread_once(&dummy_once, make_dummy);
    return dummy;
}
