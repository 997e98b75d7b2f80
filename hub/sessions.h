/* Logged-in people on care-hub's API (POST /api/v1/login): sessions in
 * memory, and the per-name lockout of wrong passwords.
 *
 * A session is a 256-bit random id (getrandom; 64 hex characters) that the
 * browser holds in an HttpOnly, SameSite=Strict cookie, and that names a
 * user. It ends at logout, after idle_ms without a request, max_age_ms after
 * the login at the latest, or when its user is gone,
 * disabled or has another password (each request looks the user up in the
 * users table again, and the session keeps a fingerprint of the password
 * hash it began with: sessions_stamp). The table is bounded (max entries):
 * a login when it is full takes the place of an ended session, else of the
 * one idle longest. Nothing is kept on disk: a restart logs everyone out, and
 * one hub does not know another's sessions (give a load balancer sticky
 * sessions, or use tokens).
 *
 * Lockout. Wrong passwords are limited per address by the API's
 * tokens_addrs, and per name here: after SESSIONS_LOCK_AFTER failures in a
 * row for one name (any address, unknown names too, so the lockout does not
 * tell which names exist), the name is locked for SESSIONS_LOCK_FIRST_MS,
 * doubling with each further failure up to SESSIONS_LOCK_MAX_MS; a right
 * password ends it. The address the name last logged in from is exempt, so
 * that guessing from elsewhere cannot lock a nurse out of her own station.
 * A check in flight counts as a failure until it ends, so concurrent
 * guesses get no more checks than sequential ones (sessions_login_begin
 * reserves, sessions_login_end settles).
 * The table of names is bounded (SESSIONS_NAMES); when it is full, the
 * entry without a lock that failed longest ago goes; when every entry is
 * locked, a new name is refused (fails closed) until the first lock ends.
 *
 * Thread-safe: one mutex. Times are monotonic milliseconds. */
#ifndef CAREHUB_SESSIONS_H
#define CAREHUB_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSIONS_ID_LEN        64 /* hex characters */
#define SESSIONS_NAME_MAX      65 /* a user's name and its NUL (users.h) */
#define SESSIONS_STAMP_LEN     16 /* hex characters of a password fingerprint */
#define SESSIONS_NAMES         1024
#define SESSIONS_LOCK_AFTER    5
#define SESSIONS_LOCK_FIRST_MS 30000LL
#define SESSIONS_LOCK_MAX_MS   (15 * 60000LL)
#define SESSIONS_FORGET_MS     (60 * 60000LL) /* failures older than this are forgotten */

struct sessions;

/* A table of at most max sessions with these expiries. Caller frees with
 * sessions_free. Aborts on out of memory. */
struct sessions *sessions_new(size_t max, int64_t idle_ms, int64_t max_age_ms);
void sessions_free(struct sessions *s);

/* The fingerprint of a password hash (borrowed), into out. */
void sessions_stamp(const char *password_hash, char out[SESSIONS_STAMP_LEN + 1]);

/* A new session of name with stamp at now; its id into id. Returns 0, or
 * -errno when no random bytes could be had (never a guessable id). */
int sessions_create(struct sessions *s, const char *name, const char *stamp, int64_t now,
                    char id[SESSIONS_ID_LEN + 1]);

/* The session id (as the cookie has it), if alive at now: true with its
 * name and stamp, and its last use set to now. An ended one is dropped. */
bool sessions_find(struct sessions *s, const char *id, int64_t now, char name[SESSIONS_NAME_MAX],
                   char stamp[SESSIONS_STAMP_LEN + 1]);

/* Ends session id (logout). */
void sessions_drop(struct sessions *s, const char *id);

/* Ends every session of name but keep (an id, or NULL): a password changed,
 * a user disabled or removed. Returns how many. */
size_t sessions_drop_user(struct sessions *s, const char *name, const char *keep);

/* Gives session id a new stamp (its user changed the password). */
void sessions_restamp(struct sessions *s, const char *id, const char *stamp);

/* Sessions alive at now. */
size_t sessions_count(struct sessions *s, int64_t now);

/* May a password for name be checked from addr at now? 0: yes, and the
 * check is reserved: call sessions_login_end once. Else the milliseconds
 * until it may (the name is locked, or checks in flight would lock it).
 * Both borrowed. */
int64_t sessions_login_begin(struct sessions *s, const char *name, const char *addr, int64_t now);

/* Ends a check sessions_login_begin let through: ok if the password was
 * right. Returns, on a failure that locks the name, the lock's length in ms
 * (for the log), else 0. */
int64_t sessions_login_end(struct sessions *s, const char *name, const char *addr, bool ok,
                           int64_t now);

#endif
