/* Password hashes for people's accounts (care-edge's console users,
 * care-hub's users file): crypt(3) yescrypt ("$y$...") from libxcrypt with
 * a random salt, and the constant-time comparisons around them.
 *
 * Unknown names. A login for a name that does not exist must take as long
 * as one with a wrong password, or response times list the accounts: the
 * caller verifies the password against a dummy hash (ch_passwd_dummy) and
 * refuses anyway. */
#ifndef CAREHUB_PASSWD_H
#define CAREHUB_PASSWD_H

#include <stdbool.h>

/* yescrypt hash of password with a fresh random salt. Caller frees; NULL
 * on failure (logged under mod). */
char *ch_passwd_hash(const char *mod, const char *password);

/* Whether password matches hash (a crypt(3) string). A hash that is not one
 * never matches. Both borrowed. */
bool ch_passwd_verify(const char *password, const char *hash);

/* Whether hash looks like a crypt(3) hash this library can check ("$id$..."
 * with a known method). */
bool ch_passwd_valid_hash(const char *hash);

/* A hash of a random password, made once per process (thread-safe), to
 * verify unknown names against. Borrowed; NULL if none could be made. */
const char *ch_passwd_dummy(void);

/* Constant time for equal lengths: a session id or hash is not leaked byte
 * by byte through response times. */
bool ch_secret_eq(const char *a, const char *b);

#endif
