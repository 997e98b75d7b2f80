/* R60ABD1-family frame parser and report decoder (see radar_frame.h).
 *
 * The parser is a byte-at-a-time state machine over one candidate frame,
 * kept in cand[]. Invariant: cand[0..clen) are the bytes of the candidate
 * seen so far, starting with 53 (clen 0 while hunting for a header).
 *
 * When a candidate is dropped, its bytes after the leading 53 go to the
 * replay queue and are fed again before any new input, because the 53 59
 * that started it may have been line noise sitting just before a real
 * frame. The replay queue only ever holds bytes of one candidate (at most
 * RADAR_FRAME_OVERHEAD + RADAR_FRAME_MAX_DATA - 1): while it is not empty,
 * every byte of a new candidate came from it, so a second drop puts back
 * fewer bytes than the queue held. Each drop removes at least one byte, so
 * replay always ends. */
#include "radar_frame.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

#define FRAME_MAX (RADAR_FRAME_OVERHEAD + RADAR_FRAME_MAX_DATA)

struct radar_parser {
    uint8_t cand[FRAME_MAX];
    size_t clen;
    uint8_t replay[FRAME_MAX];
    size_t roff, rlen; /* replay[roff..rlen) still to feed */
    struct radar_parser_stats st;
};

struct radar_parser *radar_parser_new(void)
{
    return ch_xcalloc(1, sizeof(struct radar_parser));
}

void radar_parser_free(struct radar_parser *p)
{
    free(p);
}

void radar_parser_reset(struct radar_parser *p)
{
    p->clen = 0;
    p->roff = p->rlen = 0;
}

const struct radar_parser_stats *radar_parser_stats(const struct radar_parser *p)
{
    return &p->st;
}

const char *radar_reject_name(enum radar_reject r)
{
    switch (r) {
    case RADAR_REJ_LENGTH:
        return "length";
    case RADAR_REJ_CHECKSUM:
        return "checksum";
    case RADAR_REJ_TAIL:
        return "tail";
    default:
        return "?";
    }
}

static uint16_t cand_len(const struct radar_parser *p)
{
    return (uint16_t)(p->cand[4] << 8 | p->cand[5]);
}

/* Drops the candidate: its first byte is garbage, the rest is fed again
 * ahead of whatever is left in the replay queue. */
static void drop(struct radar_parser *p, enum radar_reject why)
{
    p->st.rejected[why]++;
    p->st.garbage++;
    size_t back = p->clen - 1;
    size_t left = p->rlen - p->roff;
    /* back + left <= FRAME_MAX by the invariant in the file comment */
    memmove(p->replay + back, p->replay + p->roff, left);
    memcpy(p->replay, p->cand + 1, back);
    p->roff = 0;
    p->rlen = back + left;
    p->clen = 0;
}

/* Takes one byte; returns true when it completes a frame (left in cand). */
static bool step(struct radar_parser *p, uint8_t b)
{
    size_t i = p->clen;
    if (i == 0) {
        if (b == RADAR_HEAD0)
            p->cand[p->clen++] = b;
        else
            p->st.garbage++;
        return false;
    }
    if (i == 1) {
        if (b == RADAR_HEAD1) {
            p->cand[p->clen++] = b;
        } else {
            p->st.garbage++; /* the 53 before it */
            p->clen = 0;
            if (b == RADAR_HEAD0)
                p->cand[p->clen++] = b;
            else
                p->st.garbage++;
        }
        return false;
    }
    p->cand[p->clen++] = b;
    if (p->clen < 6)
        return false;
    size_t dlen = cand_len(p);
    if (p->clen == 6) {
        if (dlen > RADAR_FRAME_MAX_DATA)
            drop(p, RADAR_REJ_LENGTH);
        return false;
    }
    size_t sum_at = 6 + dlen; /* index of the checksum byte */
    if (p->clen - 1 == sum_at) {
        unsigned sum = 0;
        for (size_t k = 0; k < sum_at; k++)
            sum += p->cand[k];
        if ((uint8_t)sum != b)
            drop(p, RADAR_REJ_CHECKSUM);
        return false;
    }
    if (p->clen - 1 == sum_at + 1) {
        if (b != RADAR_TAIL0)
            drop(p, RADAR_REJ_TAIL);
        return false;
    }
    if (p->clen - 1 == sum_at + 2) {
        if (b != RADAR_TAIL1) {
            drop(p, RADAR_REJ_TAIL);
            return false;
        }
        return true;
    }
    return false;
}

size_t radar_parser_feed(struct radar_parser *p, const uint8_t *buf, size_t n,
                         struct radar_frame *out, bool *got)
{
    *got = false;
    bool done = false;
    while (!done && p->roff < p->rlen)
        done = step(p, p->replay[p->roff++]);
    size_t used = 0;
    while (!done && used < n) {
        p->st.bytes++;
        done = step(p, buf[used++]);
        /* a drop refills the replay queue: it goes before the rest of buf */
        while (!done && p->roff < p->rlen)
            done = step(p, p->replay[p->roff++]);
    }
    if (done) {
        out->control = p->cand[2];
        out->command = p->cand[3];
        out->len = cand_len(p);
        memcpy(out->data, p->cand + 6, out->len);
        p->clen = 0;
        p->st.frames++;
        *got = true;
    }
    return used;
}

/* ---- decoding --------------------------------------------------------- */

static const char *const metric_names[RADAR_M_COUNT] = {
    [RADAR_M_PRESENCE] = "presence",
    [RADAR_M_MOTION] = "motion",
    [RADAR_M_MOVEMENT] = "movement",
    [RADAR_M_BREATH_STATE] = "breath_state",
    [RADAR_M_RR] = "rr",
    [RADAR_M_HR] = "hr",
    [RADAR_M_IN_BED] = "in_bed",
    [RADAR_M_SLEEP_STAGE] = "sleep_stage",
};

const char *radar_metric_name(int m)
{
    return m >= 0 && m < RADAR_M_COUNT ? metric_names[m] : NULL;
}

int radar_metric_find(const char *name)
{
    for (int m = 0; m < RADAR_M_COUNT; m++)
        if (strcmp(metric_names[m], name) == 0)
            return m;
    return -1;
}

/* One-byte reports: which metric, and how the radar's code maps to the
 * normalised value (map NULL: the byte is the value, up to max). */
struct report {
    uint8_t control, command;
    int metric;
    int max;           /* highest valid code or value */
    const int8_t *map; /* code -> normalised value; -1: unknown */
};

static const int8_t map_breath[] = {-2, 1, 2, 3, 0}; /* 0 is not a code (-2: invalid) */
static const int8_t map_bed[] = {0, 1, -1};
static const int8_t map_sleep[] = {3, 2, 1, 0};

static const struct report reports[] = {
    {RADAR_CTL_PRESENCE, 0x01, RADAR_M_PRESENCE, 1, NULL},
    {RADAR_CTL_PRESENCE, 0x02, RADAR_M_MOTION, 2, NULL},
    {RADAR_CTL_PRESENCE, 0x03, RADAR_M_MOVEMENT, 100, NULL},
    {RADAR_CTL_BREATH, 0x01, RADAR_M_BREATH_STATE, 4, map_breath},
    {RADAR_CTL_BREATH, 0x02, RADAR_M_RR, 255, NULL},
    {RADAR_CTL_HEART, 0x02, RADAR_M_HR, 255, NULL},
    {RADAR_CTL_SLEEP, 0x01, RADAR_M_IN_BED, 2, map_bed},
    {RADAR_CTL_SLEEP, 0x02, RADAR_M_SLEEP_STAGE, 3, map_sleep},
};

enum radar_decode_result radar_decode(const struct radar_frame *f, struct radar_update *out)
{
    /* a query's answer is the report with the query bit set */
    uint8_t cmd = f->command & (uint8_t)~RADAR_CMD_QUERY;
    for (size_t i = 0; i < CH_ARRAY_LEN(reports); i++) {
        const struct report *r = &reports[i];
        if (r->control != f->control || r->command != cmd)
            continue;
        if (f->len != 1 || f->data[0] > r->max)
            return RADAR_DEC_INVALID;
        int v = r->map ? r->map[f->data[0]] : f->data[0];
        if (v == -2)
            return RADAR_DEC_INVALID;
        out->metric = r->metric;
        out->known = v >= 0;
        out->value = v >= 0 ? v : 0;
        return RADAR_DEC_METRIC;
    }
    return RADAR_DEC_NONE;
}

size_t radar_frame_build(uint8_t *out, size_t cap, uint8_t control, uint8_t command,
                         const uint8_t *data, size_t len)
{
    size_t total = RADAR_FRAME_OVERHEAD + len;
    if (len > RADAR_FRAME_MAX_DATA || total > cap)
        return 0;
    size_t k = 0;
    out[k++] = RADAR_HEAD0;
    out[k++] = RADAR_HEAD1;
    out[k++] = control;
    out[k++] = command;
    out[k++] = (uint8_t)(len >> 8);
    out[k++] = (uint8_t)len;
    if (len)
        memcpy(out + k, data, len);
    k += len;
    unsigned sum = 0;
    for (size_t i = 0; i < k; i++)
        sum += out[i];
    out[k++] = (uint8_t)sum;
    out[k++] = RADAR_TAIL0;
    out[k++] = RADAR_TAIL1;
    return k;
}
