/* What a regulator sees (API.md, "Regulators"): residents under a pseudonym
 * keyed with the deployment's pseudonym key, so that the regulator's records
 * cannot be joined with a site's; staff as "staff"; and the series named in
 * api.sensitive only with the grant they need. */
#include "api_internal.h"
#include "util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

/* The regulator's pseudonym of a resident: a keyed hash of site and the
 * site's own pseudonym, so that regulators' records cannot be joined with
 * the site's, and one resident stays one pseudonym across requests. */
static void regulator_pseudonym(const struct api *a, const char *site, const char *resident,
                                char out[16])
{
    char in[2 * CH_ID_MAX + 2];
    int n = snprintf(in, sizeof in, "%s/%s", site, resident);
    unsigned char md[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), a->pkey, sizeof a->pkey, (const unsigned char *)in, (size_t)n, md, &len);
    snprintf(out, 16, "P-%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4]);
}

static bool id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* A message for a regulator: rules may write the site's own pseudonym of the
 * resident into it ("{resident}"); every whole occurrence becomes the
 * regulator's pseudonym. Cut at a character boundary if it grows too long. */
static void regulator_message(const char *msg, const char *resident, const char *pseud,
                              char out[CH_TEXT_MAX])
{
    size_t n = strlen(resident), k = strlen(pseud), o = 0;
    const char *start = msg;
    while (*msg) {
        if (n && !strncmp(msg, resident, n) && !id_char(msg[n]) &&
            (msg == start || !id_char(msg[-1]))) {
            if (o + k >= CH_TEXT_MAX)
                break;
            memcpy(out + o, pseud, k);
            o += k;
            msg += n;
            continue;
        }
        size_t c = 1; /* one UTF-8 character */
        while (msg[c] && ((unsigned char)msg[c] & 0xC0) == 0x80)
            c++;
        if (o + c >= CH_TEXT_MAX)
            break;
        memcpy(out + o, msg, c);
        o += c;
        msg += c;
    }
    out[o] = '\0';
}

void privacy(const struct api *a, const struct ch_alert *t, bool regulator, struct shown *out)
{
    out->resident = t->resident;
    out->message = t->message;
    out->by = t->by[0] ? (regulator ? "staff" : t->by) : NULL;
    if (regulator && t->resident[0]) {
        regulator_pseudonym(a, t->site, t->resident, out->pseud);
        regulator_message(t->message, t->resident, out->pseud, out->msg);
        out->resident = out->pseud;
        out->message = out->msg;
    }
}

/* The grant a regulator needs for metric of measurement (metric NULL: any
 * metric of it: every grant that applies); 0 if none. The first rule that
 * names the metric decides. */
unsigned needed_grant(const struct api *a, const char *measurement, const char *metric)
{
    unsigned need = 0;
    for (size_t i = 0; i < a->n_sens; i++) {
        const struct sensitive_def *s = &a->sens[i];
        if (strcmp(s->measurement, measurement))
            continue;
        bool match = s->n_metrics == 0 || !metric;
        for (size_t j = 0; j < s->n_metrics && !match; j++)
            match = !strcmp(s->metrics[j], metric);
        if (match) {
            need |= s->grant;
            if (metric)
                return need;
        }
    }
    return need;
}

bool may_read(const struct api *a, const struct who *w, const char *measurement, const char *metric)
{
    if (!is_regulator(w))
        return true;
    unsigned need = needed_grant(a, measurement, metric);
    return (need & w->grants) == need;
}
