/* CRC-16/MODBUS, shared by the RTU paths that libmodbus does not cover
 * (slave addresses above 247 in the driver, multi-slave framing in care-sim). */
#ifndef CAREHUB_MBCRC_H
#define CAREHUB_MBCRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-16/MODBUS (reflected poly 0xA001, init 0xFFFF) of n bytes. On the wire
 * the low byte goes first. */
uint16_t mb_crc16(const uint8_t *p, size_t n);

/* True if the last two of n bytes are the CRC of the ones before. */
bool mb_crc_ok(const uint8_t *p, size_t n);

#endif
