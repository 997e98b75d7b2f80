/* What the two HTTP servers (care-edge's alarm console, care-hub's API) have
 * in common, over libmicrohttpd with one thread per connection:
 *
 * - ch_http_listen: the listening socket, opened here so that a bad address
 *   or a port in use is reported with its errno, and port 0 tells the port
 *   chosen;
 * - ch_http_unescape: percent-decoding that keeps "%00" as written (decoded,
 *   it would cut a C string short: "/index.html%00.js" is not "/index.html");
 * - ch_http_log: libmicrohttpd's messages into our log;
 * - responses: security headers, a JSON body;
 * - Server-Sent Events (struct ch_sse): a set of at most max_clients
 *   streams, with quotas on the streams that share a key (a token, a site),
 *   each with a bounded queue. Publishing never waits for a client: a
 *   client whose queue is full is marked behind, its queue dropped and its
 *   socket shut down; its stream ends with an error and the browser
 *   reconnects (and fetches a fresh snapshot). shutdown(2) is safe because
 *   a client is in the set exactly until libmicrohttpd destroys its
 *   response, which it does before closing the socket: the descriptor
 *   cannot have been reused. A stream's reader blocks on the set's
 *   condition variable, with a timeout that produces the keepalive comment,
 *   and looks every second whether its client left. */
/* ---- the server and its connection guard -----------------------------------
 *
 * ch_httpd_start runs libmicrohttpd, one thread per connection (a handler
 * may block: on InfluxDB, on an event stream), behind a guard that keeps one
 * client from taking the server (nginx's and Apache mod_reqtimeout's
 * defences, for a server that has only a global connection limit):
 *
 * - per address: at most per_address connections at once (refused at
 *   accept, before a thread exists), and at most pending_per_address of them
 *   without a complete request; over that, the address's oldest such
 *   connection is closed, and while pending_per_address of them have not
 *   sent their first request yet, its new ones are refused at accept (IPv6
 *   addresses count by /64);
 * - all addresses: at most `pending` connections without a complete request;
 *   over that, one of the address with the most is closed (of addresses
 *   tied, the one that opened the most connections), so a client with one
 *   connection is never the one to go; and while `pending` is full, an
 *   address holding a connection that has not sent its first request yet,
 *   or one of whose connections was closed without ever sending a whole
 *   request within the last header_timeout, is refused at accept. Refused
 *   at accept, a flood costs no thread (a home behind one NAT address shares
 *   that fate while the server is under such an attack), so the listening
 *   queue keeps moving for everyone else. Either way a
 *   connection kept alive after an answer goes before one still waiting for
 *   its first request (its client opens another when it needs one). What remains of
 *   `max` is the reserve for requests that arrived whole: /healthz, a login,
 *   an acknowledgement get through while slow clients hold the rest;
 * - deadlines that trickling does not extend: the headers within
 *   header_timeout of connecting (a kept-alive connection: of its previous
 *   answer; a TLS handshake counts), the body within body_timeout of the
 *   headers. The answer itself (an event stream, an export) has none; a
 *   stalled send ends at libmicrohttpd's idle timeout.
 *
 * A connection is closed with shutdown(2) under the guard's lock; it is in
 * the guard's table until libmicrohttpd's "closed" notification, which comes
 * before it closes the descriptor (see also the event streams below). What
 * was closed or refused is counted and logged once a minute, not once per
 * connection; libmicrohttpd's own messages are limited the same way.
 *
 * With https (cert_file and key_file), the server speaks only HTTPS (TLS 1.2
 * and 1.3, GnuTLS through libmicrohttpd). */
#ifndef CAREHUB_HTTPD_H
#define CAREHUB_HTTPD_H

#include "cfg.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ch_httpd_opts {
    const char *mod;                      /* logger module */
    const char *bind;                     /* NULL or "": 0.0.0.0 */
    int64_t port;                         /* 0: any */
    const struct cfg_https *https;        /* NULL or no cert_file: plain HTTP */
    const struct cfg_http_limits *limits; /* 0 fields: from defaults */
    struct cfg_http_limits defaults;      /* every field set */
    int64_t idle_timeout_s;               /* libmicrohttpd's inactivity timeout */
    MHD_AccessHandlerCallback handler;
    MHD_RequestCompletedCallback completed;
    void *cls; /* for both */
};

struct ch_httpd_stats {
    uint64_t connections;     /* now */
    uint64_t pending;         /* now, without a complete request */
    uint64_t accepted;        /* since start */
    uint64_t refused_address; /* per_address reached */
    uint64_t refused_slow;    /* refused for its address's slow connections */
    uint64_t evicted;         /* pending limits reached: oldest closed */
    uint64_t header_timeouts;
    uint64_t body_timeouts;
};

struct ch_httpd;

/* Listens (ch_http_listen), loads the certificate and key when https is set,
 * and starts the server. Returns 0, or CH_ECONFIG / -errno, logged. */
int ch_httpd_start(const struct ch_httpd_opts *o, struct ch_httpd **out);
uint16_t ch_httpd_port(const struct ch_httpd *h);
bool ch_httpd_is_https(const struct ch_httpd *h);
/* "http://127.0.0.1:8080/" or "https://[::1]:8443/". */
void ch_httpd_url(const struct ch_httpd *h, char *out, size_t n);
void ch_httpd_get_stats(struct ch_httpd *h, struct ch_httpd_stats *out);
/* The same as a JSON object (new reference), for a status page. */
struct json_t *ch_httpd_stats_json(struct ch_httpd *h);
/* Stops the server (end event streams first: ch_sse_stop) and frees it. */
void ch_httpd_stop(struct ch_httpd *h);

/* True when addr (an IPv4 or IPv6 literal) is a loopback address. */
bool ch_http_is_loopback(const char *addr);

/* True when c came over HTTPS. */
bool ch_http_is_https(struct MHD_Connection *c);

/* Listens on bind_addr (IPv4 or IPv6 literal; NULL or "" = 0.0.0.0) port
 * (0 = any). mod names the logger. Returns 0 with the socket, the port and
 * whether it is IPv6; or CH_ECONFIG / -errno, logged. */
int ch_http_listen(const char *mod, const char *bind_addr, int64_t port, int *fd_out,
                   uint16_t *port_out, bool *v6);

/* Cross-site request forgery, for a state-changing request a browser may
 * send with a cookie: it must be JSON (Content-Type application/json: an
 * HTML form on another site cannot send that, and a cross-site fetch() with
 * it needs a CORS preflight that carehub never grants) and, when the
 * browser says where it comes from (Origin), from this very host. Returns
 * 0, or the status to refuse with (415, 403) and *msg why. */
unsigned ch_http_csrf_check(struct MHD_Connection *c, const char **msg);

/* MHD_OPTION_UNESCAPE_CALLBACK */
size_t ch_http_unescape(void *cls, struct MHD_Connection *c, char *s);

/* MHD_OPTION_EXTERNAL_LOGGER; cls is the logger's module name (const char *). */
void ch_http_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Content-Security-Policy (everything from this origin, nothing inline),
 * nosniff, no framing, no referrer; with api, Cache-Control: no-store; on an
 * HTTPS server's connection thread, Strict-Transport-Security. */
void ch_http_security_headers(struct MHD_Response *r, bool api);

/* Queues body (malloc'ed, taken; NULL = out of memory) as application/json
 * with the security headers and, when hdr is set, one more header. */
enum MHD_Result ch_http_send_body(struct MHD_Connection *c, unsigned status, char *body,
                                  const char *hdr, const char *val);

/* A request body as it arrives, at most max bytes (a larger one is read on
 * and dropped, up to CH_HTTP_DISCARD_MAX, so that the client sees the 413
 * rather than a reset connection). */
#define CH_HTTP_DISCARD_MAX 65536

struct ch_http_body {
    char *data; /* NUL-terminated; NULL while empty */
    size_t len;
    size_t seen;  /* bytes received, the dropped ones too */
    bool too_big; /* more than max: answer 413 */
};

/* On a request's first call: true when its Content-Length is beyond
 * CH_HTTP_DISCARD_MAX (then too_big is set; answer 413 at once, the
 * connection closes after it). */
bool ch_http_body_declared_too_big(struct MHD_Connection *c, struct ch_http_body *b);

/* Takes the chunk libmicrohttpd hands over (and zeroes *upload_size).
 * Returns false when more than CH_HTTP_DISCARD_MAX arrived: answer 413 now. */
bool ch_http_body_feed(struct ch_http_body *b, const char *upload, size_t *upload_size, size_t max);

/* Frees the body, wiping it first (it may hold a password). */
void ch_http_body_free(struct ch_http_body *b);

/* The client's address as text. */
void ch_http_client_addr(struct MHD_Connection *c, char *out, size_t n);

/* ---- Server-Sent Events ---------------------------------------------------- */

#define CH_SSE_QUEUE   256 /* events a stream may lag behind */
#define CH_SSE_KEYS    4   /* quotas one stream may count against */
#define CH_SSE_KEY_LEN 80

struct ch_sse_client;

struct ch_sse {
    const char *mod; /* logger module */
    size_t max_clients;
    int64_t keepalive_ms;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
    struct ch_sse_client *clients;
    size_t n_clients;
    uint64_t refused;          /* refusals not logged yet */
    int64_t refused_logged_ms; /* refusals are logged once a minute */
};

void ch_sse_init(struct ch_sse *s, const char *mod, size_t max_clients, int64_t keepalive_ms);
/* Ends every stream (their readers return at once). Call before
 * MHD_stop_daemon; ch_sse_destroy after it. */
void ch_sse_stop(struct ch_sse *s);
void ch_sse_destroy(struct ch_sse *s);
/* Whether ch_sse_stop was called (the server is stopping). */
bool ch_sse_stopping(struct ch_sse *s);

/* "event: <event>\ndata: <data>\n\n" (data on one line: JSON). Caller frees. */
char *ch_sse_format(const char *event, const char *data);

/* At most max streams at once among those that carry key (a token's name,
 * a site: whatever the caller groups its clients by), so that no one group
 * takes all of max_clients. */
struct ch_sse_quota {
    char key[CH_SSE_KEY_LEN];
    size_t max;
};

/* A stream to open. */
struct ch_sse_stream {
    char *(*first)(void *arg); /* NULL, or what is sent before any event */
    void *arg;
    void *ctx;              /* taken: freed with free() when the stream ends or is refused */
    const char *who, *addr; /* borrowed: name the client in logs */
    struct ch_sse_quota quotas[CH_SSE_KEYS];
    size_t n_quotas;
};

/* Why ch_sse_start opened no stream. */
enum ch_sse_refusal {
    CH_SSE_OPENED = 0,
    CH_SSE_FULL,     /* max_clients are streaming */
    CH_SSE_QUOTA,    /* st->quotas[*quota] is reached */
    CH_SSE_STOPPING, /* ch_sse_stop was called */
};

/* Opens st on c, unless max_clients or one of its quotas is reached (both
 * checked, and the client registered, under one lock: racing opens cannot
 * overshoot). The client is registered first; then first(arg) is called
 * (when set) and what it returns (malloc'ed text, taken) is sent before any
 * event, so no event can fall between a snapshot and the stream (one in both
 * is harmless: an event carries the whole state). Then whatever
 * ch_sse_publish gives this client; ctx is what the filter of
 * ch_sse_publish sees. Returns CH_SSE_OPENED with *ret, the queued
 * response's result; or an enum ch_sse_refusal, having sent nothing (the
 * caller answers, 503) and freed ctx. Refusals are logged once a minute. */
int ch_sse_start(struct ch_sse *s, struct MHD_Connection *c, struct ch_sse_stream *st,
                 size_t *quota, enum MHD_Result *ret);

/* ch_sse_start without quotas; a refusal is answered with busy(c). */
enum MHD_Result ch_sse_open(struct ch_sse *s, struct MHD_Connection *c, char *(*first)(void *arg),
                            void *arg, void *ctx, const char *who, const char *addr,
                            enum MHD_Result (*busy)(struct MHD_Connection *c));

/* Queues event (borrowed; formatted by ch_sse_format) for every client whose
 * ctx passes want (NULL: every client). Never blocks on a client. */
void ch_sse_publish(struct ch_sse *s, const char *event, bool (*want)(const void *ctx, void *arg),
                    void *arg);

size_t ch_sse_clients(struct ch_sse *s);

#endif
