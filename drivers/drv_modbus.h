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
 * wrong function, wrong byte count, bad CRC). Never reads past n. */
int drv_modbus_parse_read_reply(const uint8_t *adu, size_t n, bool rtu, int slave,
                                const struct regmap_req *rq, uint16_t *words);

#endif
