/* People's accounts on care-hub: the users file (YAML, api.users_file;
 * format in hub/API.md, "Users file"), next to the tokens file that
 * machines use.
 *
 * A user has what a token has (tokens.h: a role, a scope of sites or a
 * district, grants, a rate), checked by the same code (tokens_check_scope),
 * plus a display name, a password hash and a disabled flag. The entry embeds
 * a struct token, so that everything that authorises a token (scope,
 * grants, its rate bucket) authorises a user unchanged.
 *
 * Names. A user's name is what people type to log in and what the audit
 * log shows ("user:护士小王"): any UTF-8 of 1..USERS_NAME_MAX bytes without
 * control characters (C0, DEL, C1), ':' (the audit's "user:" prefix,
 * HTTP Basic), or spaces at either end. Unlike ids it need not be ASCII:
 * staff log in with their own names. It never reaches a topic, a tag key
 * or a file name.
 *
 * Passwords are crypt(3) yescrypt hashes (common/passwd.h); a slow hash is
 * right here, unlike for tokens: a person's password has little entropy.
 *
 * Editing (the admin API, `care-hub users`): load the file, change the
 * table (users_set, users_remove), write it whole (users_save: a temporary
 * file, fsync, rename; mode 0600), then load it again where it is served.
 * The file on disk is the truth: a running hub reads it again on SIGHUP. */
#ifndef CAREHUB_USERS_H
#define CAREHUB_USERS_H

#include "tokens.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USERS_NAME_MAX     64   /* bytes of a name (UTF-8) */
#define USERS_DISPLAY_MAX  128  /* bytes of a display name */
#define USERS_PASSWORD_MIN 10   /* characters (code points) of a new password */
#define USERS_PASSWORD_MAX 1024 /* bytes of a password */

struct user {
    struct token t;      /* t.name: the name; role, scope, grants, rate as a token's
                            (t.sha256 unused, NULL) */
    char *display;       /* NULL: none */
    char *password_hash; /* crypt(3) */
    bool disabled;       /* may not log in; its sessions end */
};

struct users {
    struct cfg_list list; /* struct user */
    pthread_mutex_t lock; /* the rate buckets */
    int64_t default_rate;
};

/* Loads and checks path (every problem reported on stderr as
 * file:line:column with the key: a bad name or hash, a role, a scope, a
 * name used twice). A file that does not exist is an empty table when
 * missing_ok. Returns 0 with *out (caller frees with users_free), or
 * CH_ECONFIG / -errno. */
int users_load(const char *path, int64_t default_rate, bool missing_ok, struct users **out);
void users_free(struct users *u);

/* An empty table. Caller frees with users_free. */
struct users *users_new(int64_t default_rate);

/* The user called name (exact bytes), or NULL. Borrowed from u. */
const struct user *users_find(const struct users *u, const char *name);

/* Whether name may be a user's name (see above). */
bool users_valid_name(const char *name);

/* Whether password may be a new password: valid UTF-8, USERS_PASSWORD_MIN
 * characters or more, at most USERS_PASSWORD_MAX bytes, no control
 * characters. NULL, or why not (a constant English sentence). */
const char *users_password_problem(const char *password);

/* The user's rate limit, as tokens_take and tokens_pay (the latter by name;
 * CH_ENOTFOUND when no such user). */
bool users_take(struct users *u, const struct user *e, int64_t mono_ms, int *retry_s);
int users_pay(struct users *u, const char *name, double *owed, int64_t max_wait_ms, int64_t mono_ms,
              int64_t *wait_ms);

/* A change to a user (users_set). NULL / -1 / false: unchanged. */
struct user_change {
    const char *display;       /* "": none */
    const char *password_hash; /* crypt(3), from ch_passwd_hash */
    int role;                  /* enum token_role */
    bool set_scope;            /* sites and district replace the scope */
    const char *const *sites;  /* n_sites site ids or "*" */
    size_t n_sites;
    const char *district;
    bool set_grants;
    const char *const *grants; /* "health", "location" */
    size_t n_grants;
    int disabled; /* 0 or 1 */
};

#define USER_CHANGE_NONE                                                                           \
    {                                                                                              \
        .role = -1, .disabled = -1                                                                 \
    }

/* Creates user name (create; CH_ESTATE if there is one) or changes it
 * (CH_ENOTFOUND if there is none) in u. A new user needs a role, a scope
 * and a password hash. Everything borrowed, copied. Returns 0, or
 * CH_EINVAL with the problem in err (an English sentence naming the key)
 * and u unchanged. */
int users_set(struct users *u, const char *name, bool create, const struct user_change *ch,
              char *err, size_t errn);

/* Removes user name. Returns 0 or CH_ENOTFOUND. */
int users_remove(struct users *u, const char *name);

/* Writes u to path whole: path.tmp (mode 0600, the replaced file's owner
 * and group kept), fsync, rename, fsync of the directory. Where the
 * directory may not be written but the file may (the packaged unit's
 * ProtectSystem=strict makes /etc read-only but for the users file), the
 * file is rewritten in place instead (one write, truncate, fsync). Returns
 * 0 or -errno. */
int users_save(const struct users *u, const char *path);

/* care-hub users ... (argv[0] is "users"; care-hub(1)): add, passwd,
 * disable, enable, del, list on the users file of a hub configuration.
 * Returns the exit status (0, 1 runtime failure, 2 bad command line or
 * configuration). */
int users_cli(int argc, char **argv);

/* The role name or -1 (enum token_role). */
int users_role_of(const char *name);

#endif
