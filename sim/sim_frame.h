/* Modbus request framing for the simulator's server side.
 *
 * libmodbus 3.1.6 cannot serve several slaves on one RTU line (its receive
 * path drops requests for any address but the context's own), and its TCP
 * receive blocks for the rest of a frame once the first byte is in. care-sim
 * therefore cuts requests out of the byte stream itself and hands complete,
 * length-checked frames to modbus_reply(). This module is that framing:
 * the length of a request PDU from its function code, the length of a TCP
 * frame from its MBAP header, and an RTU framer that resynchronises after
 * garbage. The CRC is drivers/modbus/mbcrc.h, shared with the edge's driver. */
#ifndef CAREHUB_SIM_FRAME_H
#define CAREHUB_SIM_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Largest RTU frame: address + 253-byte PDU + CRC. */
#define SIM_RTU_MAX_ADU 256
/* Largest TCP frame: 7-byte MBAP header + 253-byte PDU. */
#define SIM_TCP_MAX_ADU 260

/* The length a request PDU (function code onwards) must have, judged from
 * its first n bytes: FC 1-6 are 5 bytes, FC 15/16 are 6 + byte count.
 * Returns the length, 0 when more bytes are needed to tell, or -1 for a
 * function code the simulator does not frame. */
int sim_frame_pdu_len(const uint8_t *pdu, size_t n);

/* The length of the Modbus TCP frame (MBAP header + PDU) at the start of a
 * stream buffer of n bytes. Returns the length, 0 when the header is not
 * complete yet, or -1 when the header is invalid (protocol id not 0, length
 * field outside 2..254): a TCP stream cannot be resynchronised after that. */
int sim_frame_mbap_len(const uint8_t *buf, size_t n);

struct sim_rtu_framer;

/* Counters of what the framer threw away. */
struct sim_rtu_stats {
    uint64_t frames;  /* frames handed out */
    uint64_t bad_crc; /* candidate frames of the right length whose CRC failed */
    uint64_t dropped; /* bytes discarded while resynchronising */
};

/* A framer for one RTU line. silence_ms is the inter-frame silence after
 * which an incomplete frame is given up. Caller frees with
 * sim_rtu_framer_free(). Never fails (aborts on OOM). */
struct sim_rtu_framer *sim_rtu_framer_new(int64_t silence_ms);
void sim_rtu_framer_free(struct sim_rtu_framer *f);

/* Free room in the buffer: read at most this many bytes before feeding.
 * Always > 0 after sim_rtu_framer_next() has returned 0. */
size_t sim_rtu_framer_space(const struct sim_rtu_framer *f);

/* Appends n bytes (n <= space) received at now_ms. Borrows data. */
void sim_rtu_framer_feed(struct sim_rtu_framer *f, const uint8_t *data, size_t n, int64_t now_ms);

/* Takes the next complete request frame, CRC included, into out (room for
 * SIM_RTU_MAX_ADU bytes) and returns its length; returns 0 when none is
 * ready. Call it until it returns 0 after every feed and whenever the
 * deadline passes: that is when garbage is dropped.
 *
 * A frame is found by length (from the function code) and CRC. A candidate
 * of full length whose CRC fails loses its first byte and the search goes
 * on. A candidate that is incomplete (or whose function code the framer
 * cannot size) waits for more bytes, unless a whole valid frame already
 * sits behind it: then the bytes in front of that frame are garbage and go.
 * Once the line has been silent for silence_ms (or the buffer is full) a
 * waiting candidate loses its first byte too, except that an unknown
 * function code with a good CRC over everything received is taken whole, so
 * the caller can answer "illegal function". */
size_t sim_rtu_framer_next(struct sim_rtu_framer *f, uint8_t *out, int64_t now_ms);

/* When buffered bytes will next be judged at silence (ms, same clock as
 * now_ms), or -1 if the buffer is empty. */
int64_t sim_rtu_framer_deadline(const struct sim_rtu_framer *f);

/* Borrowed view of the counters, valid while f lives. */
const struct sim_rtu_stats *sim_rtu_framer_stats(const struct sim_rtu_framer *f);

#endif
