/* The UART frame protocol of MicRadar's 60 GHz sleep and vital-sign radars
 * (R60ABD1 family; Seeed's MR60BHA1 speaks the same frames), as pure
 * functions: an incremental frame parser and a decoder of a frame into
 * normalised metric updates. No I/O; drivers/radar/radar.c owns the serial port.
 *
 * Frame (115200 8N1):
 *   53 59 | control | command | length (2 bytes, big endian) | data (length
 *   bytes) | checksum | 54 43
 * checksum = low 8 bits of the sum of every byte before it, header included.
 *
 * Reports decoded (radar -> host, on its own or as the answer to a query
 * whose command word is the report's with bit 7 set). Codes from the Seeed
 * MR60BHA1 Arduino library (60ghzbreathheart.h, github.com/limengdu/
 * Seeed-Studio-MR60BHA1-Sensor) and the R60ABD1 ESPHome components that cite
 * MicRadar's R60ABD1 manual V3.3; checksum and layout checked against frames
 * captured from a real module (github.com/DuncanIdahoCT/
 * espresence-mr60bha1-mmwave-sensor, static/project.md):
 *
 *   ctl  cmd (query)  data (1 byte)                         metric
 *   0x80 0x01 (0x81)  0 nobody, 1 somebody                  presence 0/1
 *   0x80 0x02 (0x82)  0 none, 1 still, 2 active             motion 0/1/2
 *   0x80 0x03 (0x83)  body movement 0..100                  movement
 *   0x81 0x01 (0x81)  1 normal, 2 too fast, 3 too slow,     breath_state 1/2/3,
 *                     4 none                                0 for none
 *   0x81 0x02 (0x82)  breaths per minute                    rr (/min)
 *   0x85 0x02 (0x82)  beats per minute                      hr (bpm)
 *   0x84 0x01 (0x81)  0 out of bed, 1 in bed, 2 none        in_bed 0/1; none
 *                     (real-time mode: no bed judgement)    makes it unknown
 *   0x84 0x02 (0x82)  0 deep, 1 light, 2 awake, 3 none      sleep_stage 3/2/1/0
 *   0x01 0x01         heartbeat (about once a minute)       none: liveness only
 *
 * sleep_stage is renumbered so that it grows with depth (0 none, 1 awake,
 * 2 light, 3 deep): a rule can then say `sleep_stage >= 2` for "asleep".
 * Everything else (distance, position, waveforms, sleep statistics, product
 * information, answers to settings) parses as a frame but carries no metric. */
#ifndef CAREHUB_RADAR_FRAME_H
#define CAREHUB_RADAR_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RADAR_HEAD0 0x53
#define RADAR_HEAD1 0x59
#define RADAR_TAIL0 0x54
#define RADAR_TAIL1 0x43
/* Bytes around the data: header 2, control, command, length 2, checksum, tail 2. */
#define RADAR_FRAME_OVERHEAD 9
/* Longest data accepted. The longest report of the family (the sleep
 * statistics, 0x84 0x0D) carries a dozen bytes; a longer length field is
 * line noise and must not make the parser swallow the frames behind it. */
#define RADAR_FRAME_MAX_DATA 256

/* Control words. */
enum {
    RADAR_CTL_SYSTEM = 0x01,   /* heartbeat */
    RADAR_CTL_PRESENCE = 0x80, /* presence, motion, body movement */
    RADAR_CTL_BREATH = 0x81,   /* breathing state and rate */
    RADAR_CTL_SLEEP = 0x84,    /* in/out of bed, sleep stage */
    RADAR_CTL_HEART = 0x85,    /* heart rate */
};
/* Command word bit that turns a report into its query (and query answer). */
#define RADAR_CMD_QUERY 0x80
/* Data byte of a query: "tell me" (0x0F in every query of the family). */
#define RADAR_QUERY_DATA 0x0F

struct radar_frame {
    uint8_t control;
    uint8_t command;
    uint16_t len; /* data bytes, <= RADAR_FRAME_MAX_DATA */
    uint8_t data[RADAR_FRAME_MAX_DATA];
};

/* Why a candidate frame was dropped. */
enum radar_reject {
    RADAR_REJ_LENGTH,   /* length field above RADAR_FRAME_MAX_DATA */
    RADAR_REJ_CHECKSUM, /* checksum byte does not match */
    RADAR_REJ_TAIL,     /* not followed by 54 43 */
    RADAR_REJ_COUNT,
};

struct radar_parser_stats {
    uint64_t bytes;                     /* fed in */
    uint64_t frames;                    /* whole frames handed out */
    uint64_t garbage;                   /* bytes skipped outside any frame */
    uint64_t rejected[RADAR_REJ_COUNT]; /* candidate frames dropped, by reason */
};

struct radar_parser;

/* A parser in its initial state (hunting for 53 59). Caller frees with
 * radar_parser_free(). Aborts on OOM. */
struct radar_parser *radar_parser_new(void);
void radar_parser_free(struct radar_parser *p);

/* Forgets any partial frame (after the port was reopened); keeps the stats. */
void radar_parser_reset(struct radar_parser *p);

/* Feeds bytes buf[0..n) (borrowed; any chunking, down to one byte at a time)
 * and stops at the first whole frame. Returns how many bytes of buf were
 * consumed; if a frame was completed, *got is true and *out holds it.
 * Callers loop until all of buf is consumed and no frame comes out (n may
 * be 0 to collect frames still inside the parser):
 *
 *   while (n > 0 || got) { size_t k = radar_parser_feed(p, buf, n, &f, &got);
 *                          buf += k; n -= k; if (got) use(&f); }
 *
 * Resynchronisation: a dropped candidate (bad length, checksum or tail) is
 * not skipped whole; the bytes after its 53 are scanned again, so a real
 * frame hidden behind a false header in line noise is still found. */
size_t radar_parser_feed(struct radar_parser *p, const uint8_t *buf, size_t n,
                         struct radar_frame *out, bool *got);

/* Borrowed; valid while p lives. */
const struct radar_parser_stats *radar_parser_stats(const struct radar_parser *p);

/* Name of a rejection reason, for logs: "length", "checksum", "tail". */
const char *radar_reject_name(enum radar_reject r);

/* Normalised metrics a radar reports (index into the driver's state). */
enum radar_metric {
    RADAR_M_PRESENCE,
    RADAR_M_MOTION,
    RADAR_M_MOVEMENT,
    RADAR_M_BREATH_STATE,
    RADAR_M_RR,
    RADAR_M_HR,
    RADAR_M_IN_BED,
    RADAR_M_SLEEP_STAGE,
    RADAR_M_COUNT,
};

/* "in_bed", "hr", ...; NULL out of range. */
const char *radar_metric_name(int m);
/* The metric named name, or -1. */
int radar_metric_find(const char *name);

/* One change a frame makes to the state. known false: the radar says it
 * cannot tell (bed state "none"), so the metric is dropped until reported
 * again. */
struct radar_update {
    int metric; /* enum radar_metric */
    bool known;
    double value;
};

enum radar_decode_result {
    RADAR_DEC_METRIC = 1,   /* *out holds an update */
    RADAR_DEC_NONE = 0,     /* a well-formed frame without a metric (heartbeat,
                               waveform, distance, settings, ...) */
    RADAR_DEC_INVALID = -1, /* a metric report with a wrong length or a value
                               outside its code table */
};

/* Decodes a frame (borrowed) into at most one metric update. */
enum radar_decode_result radar_decode(const struct radar_frame *f, struct radar_update *out);

/* Builds a frame into out (capacity cap) from control, command and data
 * (len bytes, <= RADAR_FRAME_MAX_DATA), checksum and tail included. Returns
 * its length, or 0 if it does not fit. For the driver's queries, the
 * simulator and tests. */
size_t radar_frame_build(uint8_t *out, size_t cap, uint8_t control, uint8_t command,
                         const uint8_t *data, size_t len);

#endif
