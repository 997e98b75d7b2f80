/* One simulated Modbus slave: a model's register map, its values over time,
 * its scripted events, and its counters. Transport-free: the server frames
 * requests and sends answers; the slave decides what the answer is. */
#ifndef CAREHUB_SIM_SLAVE_H
#define CAREHUB_SIM_SLAVE_H

#include "sim_model.h"
#include "sim_scenario.h"

#include <modbus.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sim_slave;

struct sim_slave_stats {
    uint64_t served;       /* normal replies */
    uint64_t exceptions;   /* exception replies, scripted or for bad requests */
    uint64_t ignored;      /* requests left unanswered (silent fault) */
    uint64_t garbage;      /* corrupt replies (garbage fault) */
    uint64_t coil_writes;  /* accepted FC05/FC15 requests */
    uint64_t coil_changes; /* coils those requests switched (on to off or off to on) */
};

enum sim_answer {
    SIM_ANSWER_REPLY,     /* the mapping is up to date: modbus_reply() */
    SIM_ANSWER_EXCEPTION, /* modbus_reply_exception() with the given code */
    SIM_ANSWER_SILENT,    /* send nothing */
    SIM_ANSWER_GARBAGE,   /* send a corrupt frame */
};

/* A slave named name (copied) at address unit, showing model (static
 * table, borrowed). Values follow seed and local time UTC + utc_offset_min.
 * Caller frees with sim_slave_free(). Aborts on OOM. */
struct sim_slave *sim_slave_new(const char *name, uint8_t unit, const struct sim_model *model,
                                uint64_t seed, int utc_offset_min);
void sim_slave_free(struct sim_slave *s);

/* Adds a scripted change of metric (an index into the model's metrics) or a
 * fault; copies the event. Events must be added in time order. */
void sim_slave_add_set(struct sim_slave *s, size_t metric, const struct sim_set *set);
void sim_slave_add_fault(struct sim_slave *s, const struct sim_fault_ev *ev);

const char *sim_slave_name(const struct sim_slave *s);
uint8_t sim_slave_unit(const struct sim_slave *s);
const struct sim_model *sim_slave_model(const struct sim_slave *s);
/* Borrowed; valid while s lives. */
const struct sim_slave_stats *sim_slave_stats(const struct sim_slave *s);
/* Borrowed mapping to pass to modbus_reply(); valid while s lives. */
modbus_mapping_t *sim_slave_mapping(struct sim_slave *s);

/* Value of metric (engineering units) at scenario time at_ms, the simulator
 * having started at Unix time start_ms: the simulated curve at
 * start_ms + at_ms, or what the scenario makes of it, as the model's derive
 * hook leaves it (a bed's hr is 0 while a scenario keeps it empty). */
double sim_slave_value(const struct sim_slave *s, size_t metric, int64_t start_ms, int64_t at_ms);

/* All metric values at once (values[] has one slot per model metric), as
 * sim_slave_value() gives them one by one. */
void sim_slave_values(const struct sim_slave *s, int64_t start_ms, int64_t at_ms, double *values);

/* The scripted fault in force at scenario time at_ms (SIM_FAULT_NONE when
 * none), for transports that are not request/answer (the radar). */
enum sim_fault sim_slave_fault(const struct sim_slave *s, int64_t at_ms);

/* Whether coil addr (zero-based) is on; false for a coil the model lacks. */
bool sim_slave_coil(const struct sim_slave *s, unsigned addr);

/* Decides the answer to the request PDU pdu[0..n), n >= 1 (function code
 * onwards, no address or CRC) at scenario time at_ms, and counts it. A fault in force
 * decides first; then a malformed or out-of-map request gets the exception
 * the Modbus spec asks for (illegal function, data value or data address;
 * a write to coils a model does not have is an illegal data address);
 * otherwise the mapping is refreshed with the current values and the caller
 * replies from it. *exception_code is set for SIM_ANSWER_EXCEPTION.
 *
 * A coil write (FC05, FC15) is applied to the mapping here, before the
 * reply, so the state and its log do not depend on the transport: every
 * coil it switches is logged at info level as
 *   [sim:NAME] NAME: coil A -> on (by FC05)      (or "-> off", "(by FC15)")
 * and counted; a write that leaves a coil as it was is logged at debug
 * level only. modbus_reply() then writes the same bits again and echoes the
 * request, as a relay board does. */
enum sim_answer sim_slave_answer(struct sim_slave *s, const uint8_t *pdu, size_t n,
                                 int64_t start_ms, int64_t at_ms, uint8_t *exception_code);

#endif
