/* Who may command what, whichever way the command came. A command carries
 * the identity its receiver authenticated, never one the sender wrote:
 *
 *   source      identity                          role
 *   console     the logged-in user                 console.users[].role
 *   local-mqtt  the local broker's user, from the   console.users[].role of
 *               topic .../cmd/{user}/{action} its   that name, else staff
 *               ACL lets only that user publish
 *   uplink      the hub's token holder ("hub:..."), the command's role (only
 *               which the hub writes: the central  a hub may publish there)
 *               broker lets only hubs publish on cmd/
 *
 * and one table says which role each action needs: acknowledging and
 * shelving are every carer's; taking an alarm out of service (and back) is
 * an admin's, because an alarm out of service is silent. A refused command
 * changes nothing; the caller logs it with its source and reason and counts
 * it. */
#ifndef CAREHUB_AUTHZ_H
#define CAREHUB_AUTHZ_H

#include "codec.h"

#include <stdbool.h>

/* 0 if role (enum ch_role) may do action (enum ch_command_action); else
 * CH_EDENIED (CH_EINVAL for an unknown action), with *why (may be NULL) set to
 * a static sentence. */
int authz_check(int action, int role, const char **why);

/* The role a local name has: the console user of that name's, else staff
 * (a local broker account the site's admin created, for a nurse-station
 * app). users/n: the console's users (borrowed). */
struct console_user;
int authz_local_role(const struct console_user *users, size_t n, const char *name);

#endif
