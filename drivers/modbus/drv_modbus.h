/* Parts of the Modbus driver that are pure functions, for tests and fuzzing. */
#ifndef CAREHUB_DRV_MODBUS_H
#define CAREHUB_DRV_MODBUS_H

#include "regmap.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Checks and decodes the reply ADU (n bytes; RTU: address, PDU, CRC; TCP:
 * 7-byte MBAP header, PDU) to the read request rq sent to slave. Fills
 * words[0..rq->count) (bits as 0/1). Returns 0, CH_EEXCEPTION for a Modbus
 * exception reply, or CH_EPROTO for anything malformed (short, wrong unit,
 * wrong function, wrong byte count, bad CRC; TCP: also a protocol id other
 * than 0 or an MBAP length that is not exactly the PDU's). Never reads past
 * n. TCP: the transaction id is not checked here, drv_modbus_check_tcp_adu()
 * does that. */
int drv_modbus_parse_read_reply(const uint8_t *adu, size_t n, bool rtu, int slave,
                                const struct regmap_req *rq, uint16_t *words);

/* Modbus TCP.
 *
 * libmodbus 3.1.6 (Debian 12) frames a TCP reply by its function code and
 * byte count, not by the MBAP header: it ignores the MBAP length, never
 * compares the unit id with the request's, and its protocol id test only
 * fails when both bytes are non-zero (a protocol id of 7 passes; 3.1.9
 * fixed that one). So the driver runs TCP transactions itself on the
 * connection libmodbus opened and checks every reply with the functions
 * below. */

/* The MBAP header: transaction id, protocol id, length, unit id. */
#define MB_MBAP_LEN 7
/* Bounds of the MBAP length field of a reply: the unit id plus a PDU of a
 * function code and at least one byte (an exception), at most 253 bytes. */
#define MB_MBAP_LENGTH_MIN 3
#define MB_MBAP_LENGTH_MAX 254
#define MB_TCP_ADU_MAX     (6 + MB_MBAP_LENGTH_MAX)

/* Which part of a reply was refused. */
enum mb_fault {
    MB_FAULT_NONE = 0,
    MB_FAULT_SHORT,     /* fewer bytes than the MBAP header announces (got, want) */
    MB_FAULT_TID,       /* transaction id is not the request's */
    MB_FAULT_PROTOCOL,  /* protocol id is not 0 */
    MB_FAULT_LENGTH,    /* MBAP length out of range, or not the length of the PDU */
    MB_FAULT_UNIT,      /* unit id is not the one asked */
    MB_FAULT_FUNCTION,  /* function code (or exception's function) is not the request's */
    MB_FAULT_COUNT,     /* byte count is not what the request asked for */
    MB_FAULT_ECHO,      /* a single write's reply does not echo the request */
    MB_FAULT_EXCEPTION, /* a well-formed exception reply (not garbage: got = exception code) */
    MB_FAULT_CRC,       /* an RTU frame whose CRC does not match */
};

/* What was wrong: the field, what arrived and what was expected
 * (want_lo..want_hi; one value when they are equal). */
struct mb_fault_info {
    enum mb_fault fault;
    unsigned got;
    unsigned want_lo, want_hi;
};

/* Static name of the field a fault is about ("MBAP length", "unit id"...). */
const char *drv_modbus_fault_name(enum mb_fault f);

/* The name of a Modbus exception code (Modbus Application Protocol
 * v1.1b3, 7): 2 "illegal data address"; "unknown exception" beyond. */
const char *drv_modbus_exception_name(unsigned code);

/* Formats *why as e.g. "MBAP protocol id 7, expected 0" into buf (always
 * NUL-terminated). Returns buf. */
char *drv_modbus_fault_format(const struct mb_fault_info *why, char *buf, size_t size);

/* Checks the 7-byte MBAP header of a reply (hdr points to at least
 * MB_MBAP_LEN bytes) to the request with transaction id tid sent to unit:
 * the transaction id, protocol id 0, a length within MB_MBAP_LENGTH_MIN..MAX
 * and the unit id, in that order. Returns 0, or CH_EPROTO with *why saying
 * which field (why may be NULL). After a refused header the rest of the
 * frame cannot be located: the connection must be resynchronised. */
int drv_modbus_check_mbap(const uint8_t *hdr, uint16_t tid, int unit, struct mb_fault_info *why);

/* Checks a whole Modbus TCP reply ADU of n bytes to the request with
 * transaction id tid sent to unit, whose PDU is req[0..req_len) (function
 * code first): the MBAP header as drv_modbus_check_mbap(), n equal to the
 * 6 bytes before the unit id plus the MBAP length, and a PDU of exactly that
 * length that answers the request: for reads (fc 1..4) the function code and
 * the byte count the quantity asks for; for single writes (fc 5, 6) an exact
 * echo; for an exception, the request's function code with 0x80 set.
 * Returns 0, CH_EEXCEPTION for a well-formed exception (why->got is the
 * exception code), or CH_EPROTO with *why saying which field (why may be
 * NULL). Never reads past n. Does not decode values. */
int drv_modbus_check_tcp_adu(const uint8_t *adu, size_t n, uint16_t tid, int unit,
                             const uint8_t *req, size_t req_len, struct mb_fault_info *why);

#endif
