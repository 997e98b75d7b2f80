/* carehub error convention: 0 is success, negative values are errors.
 * System errors travel as -errno; carehub's own codes live below -1000 so the
 * two never collide. Whether to try again is each caller's decision (a
 * driver's link errors: driver_err_is_link; the uplink retries every publish
 * until it is acknowledged), not a property of the code. */
#ifndef CAREHUB_ERR_H
#define CAREHUB_ERR_H

#include <stdbool.h>

enum ch_err {
    CH_OK = 0,
    CH_ECONFIG = -1001,    /* configuration is invalid (fatal) */
    CH_EPROTO = -1002,     /* peer sent something that violates the protocol */
    CH_EINVAL = -1003,     /* bad input (payload, argument) */
    CH_ERETRY = -1004,     /* temporary failure: retry later */
    CH_EREJECTED = -1005,  /* peer refused the data; retrying will not help */
    CH_EEXCEPTION = -1006, /* Modbus exception reply */
    CH_ENOMEM = -1007,
    CH_ETIMEOUT = -1008,  /* no answer within the configured time */
    CH_EFULL = -1009,     /* bounded buffer is full */
    CH_ENOTFOUND = -1010, /* no such object (alarm id, ...) */
    CH_ESTATE = -1011,    /* not possible in the object's current state */
    CH_ENODATA = -1012,   /* a device that pushes its data sent nothing new (not a failure) */
    CH_EDENIED = -1013,   /* the authenticated identity may not do that */
    CH_EFORMAT = -1014,   /* stored data of a newer or unknown format: left untouched (fatal) */
};

/* Returns a static string naming the error; never NULL. */
const char *ch_strerror(int err);

#endif
