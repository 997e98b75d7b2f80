/* Password-guessing throttle for the console's logins (session and HTTP
 * Basic), on a clock the caller passes in.
 *
 * Three counters per attempt: (address, user), address, and user. Each
 * counts failed password checks within a window; reaching its limit blocks
 * it for THROTTLE_BLOCK_MS, and a served block starts a fresh window.
 *
 *   counter          limit  what it stops
 *   address, user        5  guessing one account from one machine
 *   address             20  one machine trying many accounts
 *   user                30  one account guessed from many addresses; an
 *                           address where that user logged in within
 *                           THROTTLE_TRUST_MS is exempt, so a LAN guesser
 *                           cannot lock the night nurse out of her own phone
 *                           or a nurse-station app out of its Basic logins
 *
 * Check and reserve. throttle_begin() decides and takes the attempt's place
 * in all three counters under one lock, before the caller hashes the
 * password: a check in flight counts against the limits as a failure would.
 * N concurrent wrong passwords therefore get at most the limit of checks,
 * never N. throttle_end() turns the place into a failure, or gives it back on
 * success (and then forgives the (address, user) failures and trusts that
 * pair; the address's and the user's failures stand, so a guesser cannot
 * reset its budget by logging in as itself). An attempt refused only
 * because of checks in flight may queue for them briefly
 * (throttle_begin_wait), as nginx's limit_req queues a burst: honest
 * concurrent Basic requests wait a hash's time, guesses then find the block.
 *
 * Bounded memory, no eviction of blocks. The table is fixed: slots entries
 * of 160 bytes, 640 KiB for the console's 4096. A new counter takes a free
 * entry, else the least recently used one that holds nothing (no failures
 * in its window, no trust), else the least recently used counting one, else
 * the least recently used trusted one (only a right password makes those,
 * so a flood cannot push them out first). An entry that is blocked or has a
 * check in flight is never taken: failures from other addresses cannot
 * unblock an address. When every entry is blocked or in flight, an attempt
 * that needs a new counter is refused (THROTTLE_FULL) until the first block
 * ends. Failing closed costs new logins (not sessions) while such a flood
 * lasts; failing open would hand out unthrottled guesses. And the flood is
 * dear: 4096 blocked entries take some 16000 failed checks within a block
 * time, about 270 yescrypt hashes a second, more than a gateway computes.
 * Evicting a counting entry forgets its failures, but evicting thousands
 * costs a guesser far more checks than it wins back.
 *
 * Thread-safe: one mutex per table. */
#ifndef CAREHUB_THROTTLE_H
#define CAREHUB_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define THROTTLE_SLOTS     4096        /* entries in the console's table */
#define THROTTLE_WINDOW_MS 60000       /* failures counted within this window */
#define THROTTLE_PAIR_MAX  5           /* failures for one user from one address */
#define THROTTLE_ADDR_MAX  20          /* failures from one address, any users */
#define THROTTLE_USER_MAX  30          /* failures for one user, any addresses */
#define THROTTLE_BLOCK_MS  60000       /* how long a counter at its limit blocks */
#define THROTTLE_BUSY_MS   1000        /* wait suggested when checks are in flight */
#define THROTTLE_QUEUE_MS  2000        /* how long an attempt may queue for them */
#define THROTTLE_TRUST_MS  604800000LL /* a week: how long a success trusts its pair */
#define THROTTLE_USER_LEN  64          /* user names are compared up to this */

struct throttle;

/* Why an attempt may not check its password now (throttle_begin). */
enum throttle_refusal {
    THROTTLE_GO = 0,  /* check it; call throttle_end once */
    THROTTLE_BLOCKED, /* a counter is at its limit */
    THROTTLE_BUSY,    /* checks in flight would reach a limit */
    THROTTLE_FULL,    /* every entry is blocked or in flight */
};

/* Which counters an ended attempt blocked (bit mask, throttle_end). */
enum { THROTTLE_HIT_PAIR = 1, THROTTLE_HIT_ADDR = 2, THROTTLE_HIT_USER = 4 };

/* An attempt's place in the table, from throttle_begin to throttle_end.
 * Filled by throttle_begin; the caller only passes it back. */
struct throttle_ticket {
    size_t slot[3]; /* (address, user), address, user */
};

/* A table of slots entries (at least 3). Caller frees with throttle_free.
 * Aborts on out of memory, like ch_xmalloc. */
struct throttle *throttle_new(size_t slots);
void throttle_free(struct throttle *t);

/* May a login from addr (as printed by inet_ntop) as user (any string; cut
 * at THROTTLE_USER_LEN) check its password at now_ms (monotonic)? Both are
 * borrowed for the call. THROTTLE_GO: the attempt holds *ticket and must be
 * ended with throttle_end. Otherwise an enum throttle_refusal, with
 * *wait_ms (> 0) how long to wait before trying again. */
int throttle_begin(struct throttle *t, const char *addr, const char *user, int64_t now_ms,
                   struct throttle_ticket *ticket, int64_t *wait_ms);

/* throttle_begin on the monotonic clock (ch_mono_ms), but an attempt that
 * would be THROTTLE_BUSY waits for checks in flight to end, until
 * deadline_ms at most, and is then decided again. Blocks the calling
 * thread; same results as throttle_begin. */
int throttle_begin_wait(struct throttle *t, const char *addr, const char *user, int64_t deadline_ms,
                        struct throttle_ticket *ticket, int64_t *wait_ms);

/* Ends the attempt that holds ticket: ok if the password was right. Returns
 * the THROTTLE_HIT_* counters this failure blocked (0 on success, or when
 * nothing new is blocked), for the caller to log. */
unsigned throttle_end(struct throttle *t, const struct throttle_ticket *ticket, bool ok,
                      int64_t now_ms);

#endif
