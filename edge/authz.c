#include "authz.h"
#include "err.h"
#include "site_model.h"

#include <string.h>

/* The least role each action needs. */
static const int need[] = {
    [CH_CMD_ACK] = CH_ROLE_STAFF,        [CH_CMD_SHELVE] = CH_ROLE_STAFF,
    [CH_CMD_UNSHELVE] = CH_ROLE_STAFF,   [CH_CMD_OUT_OF_SERVICE] = CH_ROLE_ADMIN,
    [CH_CMD_IN_SERVICE] = CH_ROLE_ADMIN,
};

_Static_assert(sizeof need / sizeof need[0] == CH_CMD_IN_SERVICE + 1, "a role for every action");

int authz_check(int action, int role, const char **why)
{
    const char *unused;
    if (!why)
        why = &unused;
    if (action < 0 || action > CH_CMD_IN_SERVICE) {
        *why = "unknown action";
        return CH_EINVAL;
    }
    if (role < need[action]) {
        *why = "only an admin may take an alarm out of service or back into service";
        return CH_EDENIED;
    }
    *why = NULL;
    return 0;
}

int authz_local_role(const struct console_user *users, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (users[i].name && strcmp(users[i].name, name) == 0)
            return users[i].role == ROLE_ADMIN ? CH_ROLE_ADMIN : CH_ROLE_STAFF;
    return CH_ROLE_STAFF;
}
