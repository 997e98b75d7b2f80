#include "err.h"

#include <errno.h>
#include <string.h>

const char *ch_strerror(int err)
{
    switch (err) {
    case CH_OK:
        return "success";
    case CH_ECONFIG:
        return "invalid configuration";
    case CH_EPROTO:
        return "protocol error";
    case CH_EINVAL:
        return "invalid input";
    case CH_ERETRY:
        return "temporary failure";
    case CH_EREJECTED:
        return "rejected by peer";
    case CH_EEXCEPTION:
        return "exception reply";
    case CH_ENOMEM:
        return "out of memory";
    case CH_ETIMEOUT:
        return "timeout";
    case CH_EFULL:
        return "buffer full";
    case CH_ENOTFOUND:
        return "not found";
    case CH_ESTATE:
        return "not possible in the current state";
    case CH_ENODATA:
        return "nothing new";
    case CH_EDENIED:
        return "not allowed for this identity";
    case CH_EFORMAT:
        return "stored in a newer or unknown format";
    default:
        break;
    }
    if (err < 0 && err > -1000)
        return strerror(-err);
    return "unknown error";
}
