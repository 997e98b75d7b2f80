/* The care-sim server: every endpoint of a configuration served by one
 * single-threaded poll loop.
 *
 * A TCP endpoint listens on one address and serves any number of clients;
 * the MBAP unit id picks the slave, an unknown unit gets exception 0x0B
 * (gateway target failed to respond). An RTU endpoint opens a serial device
 * or pseudo-terminal as one RS-485 bus; the frame's address picks the slave,
 * requests for unknown addresses and broadcasts get no reply, as on a real
 * bus. Requests are framed by sim_frame.c and answered with libmodbus's
 * modbus_reply()/modbus_reply_exception() on a context whose socket is the
 * client's (TCP) or the line's (RTU).
 *
 * A radar endpoint opens its line the same way (libmodbus sets up termios)
 * but speaks no Modbus: its one simulated radar (sim_radar.h) streams
 * reports on a clock and answers the host's queries.
 *
 * Nothing a peer sends stops the loop: a bad TCP header closes that client
 * only, RTU garbage is dropped by the framer, a lost RTU line is reopened
 * every second. All of it is counted in the periodic statistics lines. */
#ifndef CAREHUB_SIM_SERVER_H
#define CAREHUB_SIM_SERVER_H

#include "sim_config.h"

#include <signal.h>
#include <stdint.h>

struct sim_server;

struct sim_server_opts {
    double speed;              /* scenario clock rate (1 = real time) */
    int64_t stats_interval_ms; /* 0: no statistics lines */
};

/* Builds the slaves of cfg (borrowed: it must outlive the server). Nothing
 * is opened yet. Caller frees with sim_server_free(). Aborts on OOM. */
struct sim_server *sim_server_new(const struct sim_config *cfg, const struct sim_server_opts *opts);

/* Listens on every TCP endpoint and opens every RTU line, then logs
 * "care-sim ready". Returns 0, or a negative error (-errno) after logging
 * which endpoint failed and why. */
int sim_server_open(struct sim_server *srv);

/* Serves until *stop becomes non-zero. Signals are delivered only while the
 * loop waits, with wait_mask as the signal mask (ppoll), so a signal that
 * sets *stop cannot be missed. Returns 0 when stopped, or -errno if polling
 * itself fails. */
int sim_server_run(struct sim_server *srv, const sigset_t *wait_mask,
                   const volatile sig_atomic_t *stop);

/* Logs one statistics line per endpoint and per slave. */
void sim_server_log_stats(const struct sim_server *srv);

/* Closes every socket and line and frees srv. NULL is fine. */
void sim_server_free(struct sim_server *srv);

#endif
