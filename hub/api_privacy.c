/* What a regulator sees (API.md, "Regulators"): residents under a pseudonym
 * keyed with the deployment's pseudonym key, so that the regulator's records
 * cannot be joined with a site's; staff as "staff"; and of the readings only
 * what api.regulator_view lists, an allow-list per measurement and field
 * with the grant each needs. What is not listed is not readable, so a new
 * measurement or field stays closed until someone decides to open it.
 *
 * An alarm record names the metric that raised it but not its measurement
 * (a device's profile says that, at the gateway). Its metric, value and
 * message (which may quote the value) are therefore shown to a regulator
 * only when some entry names that metric and lets the regulator read it,
 * and no measurement's entry for that name asks for a grant it lacks: "hr"
 * is a bed's heart rate wherever it comes from, and an alarm whose metric no
 * entry names (a new vital sign, stale data) keeps only its rule, priority,
 * state, times and pseudonym. */
#include "api_internal.h"
#include "hubcfg.h"
#include "util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
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

/* msg with every occurrence of needle replaced by pseud: a whole one when
 * word (an identifier inside a longer one is not it), any when not (a
 * display name: Chinese has no spaces between words). Cut at a character
 * boundary if it grows too long. */
static void replace_all(const char *msg, const char *needle, bool word, const char *pseud,
                        char out[CH_TEXT_MAX])
{
    size_t n = strlen(needle), k = strlen(pseud), o = 0;
    const char *start = msg;
    while (*msg) {
        if (n && !strncmp(msg, needle, n) &&
            (!word || (!id_char(msg[n]) && (msg == start || !id_char(msg[-1]))))) {
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

/* A message for a regulator: rules write the resident into it
 * ("{resident}": the site's label for the resident, else the site's
 * pseudonym); both become the regulator's pseudonym. */
static void regulator_message(const struct ch_alert *t, const char *pseud, char out[CH_TEXT_MAX])
{
    char tmp[CH_TEXT_MAX];
    replace_all(t->message, t->resident_name, false, pseud, tmp);
    replace_all(tmp, t->resident, true, pseud, out);
}

/* ---- the allow-list ------------------------------------------------------------------- */

static const char *const environment_fields[] = {"temperature", "humidity", "co2",  "pm25",
                                                 "pm10",        "tvoc",     "hcho", "room"};
static const char *const safety_fields[] = {"gas_lel", "gas_alarm", "smoke", "room"};
/* calls for help: regulators supervise how they are answered */
static const char *const call_fields[] = {"sos", "call", "fall", "battery", "tamper", "room"};
static const char *const bed_fields[] = {
    "in_bed", "hr", "rr", "movement", "presence", "motion", "sleep_stage", "breath_state", "room"};
static const char *const wearable_fields[] = {"battery", "battery_low", "worn", "sos", "fall"};
static const char *const wearable_vitals[] = {"hr", "rr", "spo2", "body_temp"};
/* a wearable's room is the zone it was heard in */
static const char *const wearable_location[] = {"zone", "zone_exit", "rssi", "in_range", "room"};

#define FIELDS(f) f, CH_ARRAY_LEN(f)

/* When the configuration names none (hub/API.md lists the same). */
static const struct allow_def default_allow[] = {
    {"environment", FIELDS(environment_fields), 0},
    {"safety", FIELDS(safety_fields), 0},
    {"nurse_call", FIELDS(call_fields), 0},
    {"edge_gateway", NULL, 0, 0},
    {"edge_device", NULL, 0, 0},
    {"bed", FIELDS(bed_fields), GRANT_HEALTH},
    {"wearable", FIELDS(wearable_fields), 0},
    {"wearable", FIELDS(wearable_vitals), GRANT_HEALTH},
    {"wearable", FIELDS(wearable_location), GRANT_LOCATION},
};

void privacy_setup(struct api *a)
{
    const struct cfg_list *v = &a->cfg->api.regulator_view;
    a->allow = default_allow;
    a->n_allow = CH_ARRAY_LEN(default_allow);
    if (!v->n)
        return;
    struct allow_def *d = ch_xcalloc(v->n, sizeof *d);
    for (size_t i = 0; i < v->n; i++) {
        const struct hubcfg_view *h = &((const struct hubcfg_view *)v->items)[i];
        d[i] = (struct allow_def){h->measurement, (const char *const *)h->fields.items, h->fields.n,
                                  (unsigned)h->grant};
    }
    a->allow = d;
    a->n_allow = v->n;
}

void privacy_free(struct api *a)
{
    if (a->allow != default_allow)
        free((void *)a->allow);
    a->allow = NULL;
    a->n_allow = 0;
}

/* The entry that decides field of measurement: the one naming the field,
 * else the one for every field of it; NULL: not on the list. (The
 * configuration has each field, and each whole measurement, once.) */
static const struct allow_def *entry_of(const struct api *a, const char *measurement,
                                        const char *field)
{
    const struct allow_def *whole = NULL;
    for (size_t i = 0; i < a->n_allow; i++) {
        const struct allow_def *e = &a->allow[i];
        if (strcmp(e->measurement, measurement))
            continue;
        if (!e->n_fields && !whole)
            whole = e;
        for (size_t j = 0; j < e->n_fields; j++)
            if (!strcmp(e->fields[j], field))
                return e;
    }
    return whole;
}

static bool granted(const struct allow_def *e, const struct who *w)
{
    return e && (e->grant & w->grants) == e->grant;
}

bool may_read(const struct api *a, const struct who *w, const char *measurement, const char *field)
{
    return !is_regulator(w) || granted(entry_of(a, measurement, field), w);
}

bool may_read_some(const struct api *a, const struct who *w, const char *measurement)
{
    if (!is_regulator(w))
        return true;
    for (size_t i = 0; i < a->n_allow; i++)
        if (!strcmp(a->allow[i].measurement, measurement) && granted(&a->allow[i], w))
            return true;
    return false;
}

/* Whether a regulator sees an alarm's metric, value and message (see the
 * top of this file): some entry names the metric and grants it to w, and
 * the entry that decides that name for each measurement on the list (the
 * one for every field of it included) grants it too. */
static bool alarm_metric_shown(const struct api *a, const struct who *w, const char *metric)
{
    bool named = false;
    for (size_t i = 0; metric[0] && i < a->n_allow; i++) {
        const char *m = a->allow[i].measurement;
        bool seen = false; /* each measurement once */
        for (size_t k = 0; k < i && !seen; k++)
            seen = !strcmp(a->allow[k].measurement, m);
        const struct allow_def *e = seen ? NULL : entry_of(a, m, metric);
        if (!e)
            continue;
        if (!granted(e, w))
            return false;
        named = named || e->n_fields > 0;
    }
    return named;
}

/* ---- alarm records ------------------------------------------------------------------ */

void privacy(const struct api *a, const struct ch_alert *t, const struct who *w, struct shown *out)
{
    bool regulator = is_regulator(w);
    out->resident = t->resident;
    /* a resident's label, and a device's name, which staff often write
     * after its wearer ("王奶奶的手环"), are the site's, not a regulator's */
    out->resident_name = regulator ? "" : t->resident_name;
    out->device_name = regulator ? "" : t->device_name;
    out->message = t->message;
    out->by = t->by[0] ? (regulator ? "staff" : t->by) : NULL;
    out->metric = t->metric;
    out->has_value = t->has_value;
    out->value = t->value;
    if (!regulator)
        return;
    if (t->resident[0]) {
        regulator_pseudonym(a, t->site, t->resident, out->pseud);
        out->resident = out->pseud;
    }
    if (!alarm_metric_shown(a, w, t->metric)) {
        out->metric = out->message = "";
        out->has_value = false;
        out->value = 0;
    } else if (t->resident[0]) {
        regulator_message(t, out->pseud, out->msg);
        out->message = out->msg;
    }
}
