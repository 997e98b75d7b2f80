/* Alert and command payloads: the decoders must never crash; whatever they
 * accept must encode, decode again to the very same struct (values exactly:
 * the alert encoder writes as many digits as it takes), encode to the same
 * text, and, for an alert, make exactly one line of line protocol. First
 * byte picks the decoder: even alert, odd command. */
#include "codec.h"
#include "lineproto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_alert(const char *buf, size_t len)
{
    struct ch_alert a, b;
    char err[256];
    if (ch_alert_decode(buf, len, &a, err, sizeof err) != 0) {
        static const struct ch_alert zero;
        if (memcmp(&a, &zero, sizeof a) != 0)
            abort(); /* nothing half-filled */
        return;
    }
    char *json = ch_alert_encode(&a);
    if (!json || ch_alert_decode(json, strlen(json), &b, err, sizeof err) != 0)
        abort();
    /* both zeroed then filled by the decoder: padding compares equal too */
    if (memcmp(&a, &b, sizeof a) != 0)
        abort();
    char *again = ch_alert_encode(&b);
    if (!again || strcmp(json, again) != 0)
        abort();
    struct lp_buf lp;
    lp_init(&lp);
    if (lp_alert(&lp, &a) != 0 || lp.lines != 1 || lp.data[lp.len - 1] != '\n' ||
        memchr(lp.data, '\n', lp.len - 1) != NULL)
        abort();
    lp_free(&lp);
    free(json);
    free(again);
}

static void check_command(const char *buf, size_t len)
{
    struct ch_command c, d;
    char err[256];
    if (ch_command_decode(buf, len, &c, err, sizeof err) != 0)
        return;
    char *json = ch_command_encode(&c);
    if (!json || ch_command_decode(json, strlen(json), &d, err, sizeof err) != 0 ||
        memcmp(&c, &d, sizeof c) != 0)
        abort();
    if (ch_command_action_parse(ch_command_action_name(c.action)) != c.action)
        abort();
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *buf = (const char *)data + 1;
    if (data[0] % 2 == 0)
        check_alert(buf, size - 1);
    else
        check_command(buf, size - 1);
    return 0;
}
