#include "httpd.h"
#include "cfg.h"
#include "err.h"
#include "fileio.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SSE_RETRY_MS 3000  /* EventSource reconnect delay */
#define SSE_BLOCK    16384 /* buffer libmicrohttpd gives the reader */
#define SSE_PEER_MS  1000  /* a waiting stream looks this often whether its client left */

int ch_http_listen(const char *mod, const char *bind_addr, int64_t port, int *fd_out,
                   uint16_t *port_out, bool *v6)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    const char *a = bind_addr && *bind_addr ? bind_addr : "0.0.0.0";
    if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof *s4;
        *v6 = false;
    } else if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof *s6;
        *v6 = true;
    } else {
        LOGE(mod, NULL, "bind: '%s' is not an IPv4 or IPv6 address", a);
        return CH_ECONFIG;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        LOGE(mod, NULL, "socket: %s", strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 511)) {
        int e = errno;
        LOGE(mod, NULL, "cannot listen on %s port %lld: %s", a, (long long)port, strerror(e));
        close(fd);
        return -e;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port_out = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    *fd_out = fd;
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

size_t ch_http_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* libmicrohttpd writes a line per failed connection: under attack, a flood.
 * At most LOG_BURST lines a minute (all servers of the process together),
 * then one line saying how many were left out. */
#define LOG_BURST     20
#define LOG_WINDOW_MS 60000

void ch_http_log(void *cls, const char *fmt, va_list ap)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t window_end;
    static unsigned lines, dropped;
    const char *mod = cls ? (const char *)cls : "http";
    int64_t now = ch_mono_ms();
    pthread_mutex_lock(&mu);
    unsigned skipped = 0;
    if (now >= window_end) {
        skipped = dropped;
        window_end = now + LOG_WINDOW_MS;
        lines = dropped = 0;
    }
    bool show = lines < LOG_BURST;
    if (show)
        lines++;
    else
        dropped++;
    pthread_mutex_unlock(&mu);
    if (skipped)
        LOGW(mod, "mhd", "%u more libmicrohttpd messages in the last minute not logged", skipped);
    if (!show)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    LOGW(mod, "mhd", "%s", line);
}

/* Whether the request being handled on this thread came over HTTPS: set by
 * the guard before each call of a server's handler (one thread per
 * connection, and a response is made on its connection's thread), read when
 * the response's headers are added. */
static __thread bool thread_https;

void ch_http_security_headers(struct MHD_Response *r, bool api)
{
    /* HTTPS only from now on, for a year (RFC 6797); not on plain HTTP,
       where a browser ignores it anyway */
    if (thread_https)
        MHD_add_response_header(r, "Strict-Transport-Security", "max-age=31536000");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; base-uri 'none'; form-action 'self'; "
                            "frame-ancestors 'none'; object-src 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    if (api)
        MHD_add_response_header(r, "Cache-Control", "no-store");
}

enum MHD_Result ch_http_send_body(struct MHD_Connection *c, unsigned status, char *body,
                                  const char *hdr, const char *val)
{
    if (!body) {
        body = ch_xstrdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
    ch_http_security_headers(r, true);
    if (hdr)
        MHD_add_response_header(r, hdr, val);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

bool ch_http_body_declared_too_big(struct MHD_Connection *c, struct ch_http_body *b)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    long long n;
    if (cl && !ch_parse_int(cl, &n) && n > CH_HTTP_DISCARD_MAX)
        b->too_big = true;
    return b->too_big;
}

bool ch_http_body_feed(struct ch_http_body *b, const char *upload, size_t *upload_size, size_t max)
{
    size_t n = *upload_size;
    *upload_size = 0;
    b->seen += n;
    if (b->too_big || b->len + n > max) {
        b->too_big = true;
        ch_http_body_free(b);
        return b->seen <= CH_HTTP_DISCARD_MAX;
    }
    b->data = ch_xrealloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, upload, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

void ch_http_body_free(struct ch_http_body *b)
{
    if (b->data)
        explicit_bzero(b->data, b->len);
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

void ch_http_client_addr(struct MHD_Connection *c, char *out, size_t n)
{
    ch_strlcpy(out, "?", n);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)n);
}

/* ---- Server-Sent Events ------------------------------------------------------- */

struct ch_sse_client {
    struct ch_sse *s;
    struct ch_sse_client *prev, *next;
    int fd;
    char *queue[CH_SSE_QUEUE]; /* formatted events, owned */
    size_t head, n;
    bool behind; /* queue overflowed: the stream ends */
    char *cur;   /* text being written, owned */
    size_t cur_len, cur_off;
    void *ctx;
    char who[64];
    char addr[64];
    char keys[CH_SSE_KEYS][CH_SSE_KEY_LEN]; /* of the quotas it counts against */
    size_t n_keys;
};

void ch_sse_init(struct ch_sse *s, const char *mod, size_t max_clients, int64_t keepalive_ms)
{
    memset(s, 0, sizeof *s);
    s->mod = mod;
    s->max_clients = max_clients;
    s->keepalive_ms = keepalive_ms;
    pthread_mutex_init(&s->mu, NULL);
    ch_cond_init_monotonic(&s->cond);
}

void ch_sse_stop(struct ch_sse *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void ch_sse_destroy(struct ch_sse *s)
{
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
}

bool ch_sse_stopping(struct ch_sse *s)
{
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stopping;
}

char *ch_sse_format(const char *event, const char *data)
{
    size_t n = strlen(event) + strlen(data) + 32;
    char *p = ch_xmalloc(n);
    snprintf(p, n, "event: %s\ndata: %s\n\n", event, data);
    return p;
}

static void drop_queue(struct ch_sse_client *cl)
{
    for (size_t i = 0; i < cl->n; i++)
        free(cl->queue[(cl->head + i) % CH_SSE_QUEUE]);
    cl->n = 0;
}

/* Whether the client closed its end of the connection (a stream's client
 * sends nothing after its request; over TLS, unread records before the
 * close do not hide it). */
static bool peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* On the stream's own connection thread whenever libmicrohttpd can send
 * more: blocks until there is something to send (an event, the keepalive
 * comment, or the end of the stream). While it waits it looks every
 * SSE_PEER_MS whether the client left, so that a closed stream gives its
 * place (and its quotas') back at once, not at the next keepalive. */
static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct ch_sse_client *cl = cls;
    struct ch_sse *s = cl->s;
    (void)pos;
    if (!cl->cur) {
        int64_t deadline = ch_mono_ms() + s->keepalive_ms, now;
        bool gone = false;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !cl->behind && cl->n == 0 && !gone &&
               (now = ch_mono_ms()) < deadline) {
            ch_cond_wait_until(&s->cond, &s->mu,
                               deadline - now > SSE_PEER_MS ? now + SSE_PEER_MS : deadline);
            gone = cl->n == 0 && peer_gone(cl->fd);
        }
        bool stop = s->stopping, behind = cl->behind || gone;
        if (!stop && !behind && cl->n > 0) {
            cl->cur = cl->queue[cl->head];
            cl->head = (cl->head + 1) % CH_SSE_QUEUE;
            cl->n--;
        }
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (behind) /* an error, not a clean end: the browser reconnects */
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!cl->cur)
            cl->cur = ch_xstrdup(": keepalive\n\n");
        cl->cur_len = strlen(cl->cur);
        cl->cur_off = 0;
    }
    size_t n = cl->cur_len - cl->cur_off;
    if (n > max)
        n = max;
    memcpy(out, cl->cur + cl->cur_off, n);
    cl->cur_off += n;
    if (cl->cur_off == cl->cur_len) {
        free(cl->cur);
        cl->cur = NULL;
    }
    return (ssize_t)n;
}

static void unlink_client(struct ch_sse *s, struct ch_sse_client *cl)
{
    if (cl->prev)
        cl->prev->next = cl->next;
    else if (s->clients == cl)
        s->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    s->n_clients--;
}

/* The response is destroyed: the stream is over, the socket still open. */
static void sse_free(void *cls)
{
    struct ch_sse_client *cl = cls;
    struct ch_sse *s = cl->s;
    pthread_mutex_lock(&s->mu);
    unlink_client(s, cl);
    drop_queue(cl);
    pthread_mutex_unlock(&s->mu);
    LOGD(s->mod, cl->addr, "event stream of '%s' closed", cl->who);
    free(cl->cur);
    free(cl->ctx);
    free(cl);
}

/* The streams in s that carry key. Under s->mu. */
static size_t count_key(const struct ch_sse *s, const char *key)
{
    size_t n = 0;
    for (const struct ch_sse_client *cl = s->clients; cl; cl = cl->next)
        for (size_t i = 0; i < cl->n_keys; i++)
            if (!strcmp(cl->keys[i], key))
                n++;
    return n;
}

/* Registers cl unless a limit of st is reached: which (enum ch_sse_refusal),
 * and in *quota the quota reached. Under s->mu. */
static int admit(struct ch_sse *s, struct ch_sse_client *cl, const struct ch_sse_stream *st,
                 size_t *quota)
{
    if (s->stopping)
        return CH_SSE_STOPPING;
    if (s->n_clients >= s->max_clients)
        return CH_SSE_FULL;
    for (size_t i = 0; i < st->n_quotas; i++) {
        if (count_key(s, st->quotas[i].key) >= st->quotas[i].max) {
            *quota = i;
            return CH_SSE_QUOTA;
        }
    }
    for (size_t i = 0; i < st->n_quotas; i++)
        ch_strlcpy(cl->keys[i], st->quotas[i].key, CH_SSE_KEY_LEN);
    cl->n_keys = st->n_quotas;
    cl->next = s->clients;
    if (s->clients)
        s->clients->prev = cl;
    s->clients = cl;
    s->n_clients++;
    return CH_SSE_OPENED;
}

/* A refusal in the log: the first at once, the others counted and told with
 * the next one a minute later (a client retrying in a loop must not flood
 * the log). */
static void log_refusal(struct ch_sse *s, const struct ch_sse_stream *st, int why, size_t quota)
{
    pthread_mutex_lock(&s->mu);
    int64_t now = ch_mono_ms();
    uint64_t before = s->refused;
    bool say = !s->refused_logged_ms || now - s->refused_logged_ms >= 60000;
    if (say) {
        s->refused = 0;
        s->refused_logged_ms = now;
    } else {
        s->refused++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!say)
        return;
    char reason[CH_SSE_KEY_LEN + 48];
    if (why == CH_SSE_QUOTA)
        snprintf(reason, sizeof reason, "%zu streams of %s open", st->quotas[quota].max,
                 st->quotas[quota].key);
    else
        ch_strlcpy(reason, why == CH_SSE_FULL ? "max_clients reached" : "stopping", sizeof reason);
    if (before)
        LOGW(s->mod, st->addr,
             "event stream of '%s' refused: %s (and %" PRIu64 " more since the "
             "last report)",
             st->who, reason, before);
    else
        LOGW(s->mod, st->addr, "event stream of '%s' refused: %s", st->who, reason);
}

int ch_sse_start(struct ch_sse *s, struct MHD_Connection *c, struct ch_sse_stream *st,
                 size_t *quota, enum MHD_Result *ret)
{
    *ret = MHD_NO;
    struct ch_sse_client *cl = ch_xcalloc(1, sizeof *cl);
    cl->s = s;
    cl->fd = -1;
    cl->ctx = st->ctx;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        cl->fd = ci->connect_fd;
    ch_strlcpy(cl->who, st->who, sizeof cl->who);
    ch_strlcpy(cl->addr, st->addr, sizeof cl->addr);
    if (st->n_quotas > CH_SSE_KEYS)
        st->n_quotas = CH_SSE_KEYS;

    size_t which = 0;
    pthread_mutex_lock(&s->mu);
    int why = admit(s, cl, st, &which);
    pthread_mutex_unlock(&s->mu);
    if (why) {
        log_refusal(s, st, why, which);
        free(cl->ctx);
        free(cl);
        if (quota)
            *quota = which;
        return why;
    }

    char head[32];
    snprintf(head, sizeof head, "retry: %d\n\n", SSE_RETRY_MS);
    char *snap = st->first ? st->first(st->arg) : NULL;
    size_t n = strlen(head) + (snap ? strlen(snap) : 0) + 1;
    cl->cur = ch_xmalloc(n);
    snprintf(cl->cur, n, "%s%s", head, snap ? snap : "");
    free(snap);
    cl->cur_len = strlen(cl->cur);

    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, cl, sse_free);
    if (!r) {
        sse_free(cl);
        return CH_SSE_OPENED;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    ch_http_security_headers(r, true);
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    LOGD(s->mod, st->addr, "event stream of '%s' opened", st->who);
    *ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return CH_SSE_OPENED;
}

enum MHD_Result ch_sse_open(struct ch_sse *s, struct MHD_Connection *c, char *(*first)(void *arg),
                            void *arg, void *ctx, const char *who, const char *addr,
                            enum MHD_Result (*busy)(struct MHD_Connection *c))
{
    struct ch_sse_stream st = {.first = first, .arg = arg, .ctx = ctx, .who = who, .addr = addr};
    enum MHD_Result ret;
    return ch_sse_start(s, c, &st, NULL, &ret) ? busy(c) : ret;
}

void ch_sse_publish(struct ch_sse *s, const char *event, bool (*want)(const void *ctx, void *arg),
                    void *arg)
{
    pthread_mutex_lock(&s->mu);
    for (struct ch_sse_client *cl = s->clients; cl; cl = cl->next) {
        if (cl->behind || (want && !want(cl->ctx, arg)))
            continue;
        if (cl->n == CH_SSE_QUEUE) {
            /* too far behind to catch up usefully: end its stream now (see
             * httpd.h for why shutdown is safe here) */
            cl->behind = true;
            drop_queue(cl);
            if (cl->fd >= 0)
                shutdown(cl->fd, SHUT_RDWR);
            LOGW(s->mod, cl->addr, "event stream of '%s' fell %d events behind; disconnected",
                 cl->who, CH_SSE_QUEUE);
            continue;
        }
        cl->queue[(cl->head + cl->n) % CH_SSE_QUEUE] = ch_xstrdup(event);
        cl->n++;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

size_t ch_sse_clients(struct ch_sse *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n_clients;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- the server and its connection guard (see httpd.h) ------------------------ */

#define REPORT_MS      60000 /* what the guard did: logged at most this often */
#define STRUCK_MAX     1024  /* addresses remembered as struck with no connection */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PEM_MAX        (256 * 1024)

enum gstate {
    G_PENDING, /* no complete request: connecting, TLS, headers, or idle between requests */
    G_BODY,    /* headers in, body arriving */
    G_ACTIVE,  /* a whole request, being answered */
    G_CLOSING  /* shut down by the guard; waiting for libmicrohttpd to close it */
};

struct gaddr { /* an address with connections, or struck a while ago */
    struct gaddr *next;
    unsigned char key[16]; /* IPv4 mapped into IPv6, or an IPv6 /64 */
    size_t total, pending;
    size_t waiting;       /* of pending: never answered (a slow client's are) */
    int64_t struck_until; /* monotonic: a connection of it that never sent a
                             whole request was closed; until then it is
                             refused at accept while `pending` is full */
    uint64_t opened;      /* connections it opened while it had any open: a client
                             that churns or holds many counts high, one asking
                             now and then starts again from 1 each time */
};

struct gconn {
    struct gconn *prev, *next;
    int fd;
    struct gaddr *a;
    enum gstate state;
    bool served;   /* answered a request before: pending now means kept alive */
    int64_t since; /* monotonic: when the current deadline started */
};

struct ch_httpd {
    struct MHD_Daemon *d;
    const char *mod;
    struct cfg_http_limits lim;
    MHD_AccessHandlerCallback handler;
    MHD_RequestCompletedCallback completed;
    void *cls;
    bool https, v6;
    uint16_t port;
    char bind[64];
    char *cert, *key; /* PEM, held while the daemon runs */
    size_t key_len;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t reaper;
    bool reaper_started, stopping;
    struct gconn *conns; /* newest first */
    struct gaddr *addrs;
    size_t n_struck_idle; /* of addrs: struck, with no connection */
    size_t closing;       /* connections closed by the guard or ending */
    struct ch_httpd_stats st;
    struct ch_httpd_stats reported; /* counters at the last report */
    int64_t next_report;
};

static void addr_key(const struct sockaddr *sa, unsigned char out[16])
{
    memset(out, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) /* an IPv4 client of a socket on "::" */
            memcpy(out, a6, 16);
        else
            memcpy(out, a6, 8);
    }
}

static void key_text(const unsigned char k[16], char *out, size_t n)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(k, mapped, 12)) {
        inet_ntop(AF_INET, k + 12, out, (socklen_t)n);
    } else {
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, k, a, sizeof a);
        snprintf(out, n, "%s/64", a);
    }
}

static bool is_pending(const struct gconn *g)
{
    return g->state == G_PENDING || g->state == G_BODY;
}

static bool is_waiting(const struct gconn *g)
{
    return is_pending(g) && !g->served;
}

static struct gaddr *find_addr(struct ch_httpd *h, const unsigned char key[16])
{
    for (struct gaddr *a = h->addrs; a; a = a->next)
        if (!memcmp(a->key, key, 16))
            return a;
    return NULL;
}

/* Moves g to state (served: it answered a request), keeping the pending
 * and waiting counts. Locked. */
static void set_state(struct ch_httpd *h, struct gconn *g, enum gstate state, bool served)
{
    int was_pending = is_pending(g), was_waiting = is_waiting(g);
    h->closing += (size_t)(state == G_CLOSING) - (size_t)(g->state == G_CLOSING);
    g->state = state;
    g->served = served;
    int d = (int)is_pending(g) - was_pending, dw = (int)is_waiting(g) - was_waiting;
    h->st.pending += (uint64_t)(int64_t)d;
    g->a->pending += (size_t)(ssize_t)d;
    g->a->waiting += (size_t)(ssize_t)dw;
}

/* Closes g: the connection thread sees the end of its socket and ends. A
 * connection that never sent a whole request strikes its address. Locked. */
static void evict(struct ch_httpd *h, struct gconn *g)
{
    if (!g->served)
        g->a->struck_until = ch_mono_ms() + h->lim.header_timeout_ms;
    set_state(h, g, G_CLOSING, g->served);
    if (g->fd >= 0)
        shutdown(g->fd, SHUT_RDWR);
}

/* Whether pending g should go before pending best: a kept-alive connection
 * (answered already; its client opens another when it needs one) before one
 * still waiting for its first request, then the oldest. */
static bool goes_first(const struct gconn *g, const struct gconn *best)
{
    if (!best || g->served != best->served)
        return !best || g->served;
    return g->since <= best->since;
}

/* The first to go of address a's pending connections. Locked. */
static struct gconn *oldest_of(struct ch_httpd *h, const struct gaddr *a);

/* Over `pending` for all addresses: a connection of the address with the
 * most pending ones; of those tied (many addresses with one each: slow
 * clients from many addresses), the one that opened the most. A client that
 * asks now and then never is that one. Locked. */
static struct gconn *heaviest_pending(struct ch_httpd *h)
{
    const struct gaddr *heavy = NULL;
    for (const struct gaddr *a = h->addrs; a; a = a->next)
        if (a->pending && (!heavy || a->pending > heavy->pending ||
                           (a->pending == heavy->pending && a->opened > heavy->opened)))
            heavy = a;
    return heavy ? oldest_of(h, heavy) : NULL;
}

/* The first to go of the pending connections of address a. Locked. */
static struct gconn *oldest_of(struct ch_httpd *h, const struct gaddr *a)
{
    struct gconn *best = NULL;
    for (struct gconn *g = h->conns; g; g = g->next)
        if (g->a == a && is_pending(g) && goes_first(g, best))
            best = g;
    return best;
}

/* Unlinks and frees address a, which has no connection. Locked. */
static void drop_addr(struct ch_httpd *h, struct gaddr *a)
{
    struct gaddr **pp = &h->addrs;
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    free(a);
}

/* Address a's last connection ended: forgotten, unless it is struck (and
 * not too many are remembered so). Locked. */
static void addr_idle(struct ch_httpd *h, struct gaddr *a, int64_t now)
{
    if (a->struck_until > now && h->n_struck_idle < STRUCK_MAX) {
        a->opened = 0;
        h->n_struck_idle++;
    } else {
        drop_addr(h, a);
    }
}

/* Forgets the idle addresses whose strike is over. Locked. */
static void forget_struck(struct ch_httpd *h, int64_t now)
{
    for (struct gaddr *a = h->addrs, *next; a; a = next) {
        next = a->next;
        if (!a->total && a->struck_until <= now) {
            h->n_struck_idle--;
            drop_addr(h, a);
        }
    }
}

/* MHD_OPTION_ACCEPT_POLICY_CALLBACK, before a thread exists: per_address;
 * an address with pending_per_address connections waiting for their first
 * request; and while `pending` is full (counting the connections closed and not
 * yet ended: a thread each, holding a place under `max`), an address that holds a connection still
 * waiting for its first request, or was struck lately (one of its
 * connections was closed without ever sending a whole request), is refused
 * here rather than let in to close another such connection: a flood from
 * many addresses then costs an accept and a close each, not a thread
 * started and ended, and the listening queue keeps moving for everyone
 * else. */
static enum MHD_Result guard_accept(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct ch_httpd *h = cls;
    (void)len;
    unsigned char k[16];
    addr_key(sa, k);
    pthread_mutex_lock(&h->mu);
    const struct gaddr *a = find_addr(h, k);
    bool ok = !a || a->total < (size_t)h->lim.per_address;
    if (!ok) {
        h->st.refused_address++;
    } else if (a && (a->waiting >= (size_t)h->lim.pending_per_address ||
                     (h->st.pending + h->closing >= (uint64_t)h->lim.pending &&
                      (a->waiting || a->struck_until > ch_mono_ms())))) {
        ok = false;
        h->st.refused_slow++;
    }
    pthread_mutex_unlock(&h->mu);
    return ok ? MHD_YES : MHD_NO;
}

/* MHD_OPTION_NOTIFY_CONNECTION: the table, and the pending limits. */
static void guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode code)
{
    struct ch_httpd *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct gconn *g = ch_xcalloc(1, sizeof *g);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        g->fd = ci ? ci->connect_fd : -1;
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        unsigned char k[16];
        addr_key(ci ? ci->client_addr : NULL, k);
        g->state = G_ACTIVE; /* made pending below */
        g->since = ch_mono_ms();
        *socket_context = g;
        pthread_mutex_lock(&h->mu);
        g->a = find_addr(h, k);
        if (g->a && !g->a->total)
            h->n_struck_idle--; /* struck, back with a connection */
        if (!g->a) {
            g->a = ch_xcalloc(1, sizeof *g->a);
            memcpy(g->a->key, k, 16);
            g->a->next = h->addrs;
            h->addrs = g->a;
        }
        g->a->total++;
        g->a->opened++;
        set_state(h, g, G_PENDING, false);
        g->next = h->conns;
        if (h->conns)
            h->conns->prev = g;
        h->conns = g;
        h->st.connections++;
        h->st.accepted++;
        struct gconn *victim = NULL;
        if (g->a->pending > (size_t)h->lim.pending_per_address)
            victim = oldest_of(h, g->a);
        else if (h->st.pending > (uint64_t)h->lim.pending)
            victim = heaviest_pending(h);
        if (victim) {
            evict(h, victim);
            h->st.evicted++;
        }
        pthread_mutex_unlock(&h->mu);
        return;
    }
    struct gconn *g = *socket_context;
    if (!g)
        return;
    pthread_mutex_lock(&h->mu);
    if (g->prev)
        g->prev->next = g->next;
    else
        h->conns = g->next;
    if (g->next)
        g->next->prev = g->prev;
    h->st.connections--;
    set_state(h, g, G_CLOSING, g->served);
    h->closing--;
    if (--g->a->total == 0)
        addr_idle(h, g->a, ch_mono_ms());
    pthread_mutex_unlock(&h->mu);
    free(g);
    *socket_context = NULL;
}

static struct gconn *gconn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static bool expects_body(struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    long long n;
    if (cl && !ch_parse_int(cl, &n))
        return n > 0;
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding") != NULL;
}

/* Every call of the server's handler passes here: the headers are in (the
 * first call of a request), the body is in (a later call with nothing
 * uploaded). */
static enum MHD_Result guard_access(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **con_cls)
{
    struct ch_httpd *h = cls;
    thread_https = h->https;
    struct gconn *g = gconn_of(c);
    if (g) {
        bool body = expects_body(c);
        pthread_mutex_lock(&h->mu);
        if (g->state == G_PENDING && body) {
            set_state(h, g, G_BODY, g->served);
            g->since = ch_mono_ms();
        } else if (g->state == G_PENDING || (g->state == G_BODY && *upload_size == 0)) {
            set_state(h, g, G_ACTIVE, g->served);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return h->handler(h->cls, c, url, method, version, upload, upload_size, con_cls);
}

/* A request is over: the connection waits for the next one (pending). */
static void guard_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode why)
{
    struct ch_httpd *h = cls;
    struct gconn *g = gconn_of(c);
    if (g) {
        pthread_mutex_lock(&h->mu);
        if (g->state == G_ACTIVE || g->state == G_BODY) {
            set_state(h, g, G_PENDING, true);
            g->since = ch_mono_ms();
        }
        pthread_mutex_unlock(&h->mu);
    }
    if (h->completed)
        h->completed(h->cls, c, con_cls, why);
}

/* Logs what the guard did since the last report, if anything. Locked. */
static void guard_report(struct ch_httpd *h, int64_t now)
{
    if (now < h->next_report)
        return;
    h->next_report = now + REPORT_MS;
    struct ch_httpd_stats *s = &h->st, *r = &h->reported;
    uint64_t refused = s->refused_address - r->refused_address,
             slow = s->refused_slow - r->refused_slow, evicted = s->evicted - r->evicted,
             hdr = s->header_timeouts - r->header_timeouts,
             body = s->body_timeouts - r->body_timeouts;
    if (refused || slow || evicted || hdr || body) {
        /* the address holding the most connections now, as a hint */
        char top[INET6_ADDRSTRLEN + 4] = "-";
        size_t most = 0;
        for (const struct gaddr *a = h->addrs; a; a = a->next) {
            if (a->total > most) {
                most = a->total;
                key_text(a->key, top, sizeof top);
            }
        }
        LOGW(h->mod, NULL,
             "slow or excess clients in the last minute: %" PRIu64 " refused (per_address %lld), "
             "%" PRIu64 " refused for their address's slow connections, "
             "%" PRIu64 " closed without a complete request (pending limits), %" PRIu64
             " past header_timeout, %" PRIu64 " past body_timeout; now %" PRIu64
             " connections, %" PRIu64 " pending, most from %s (%zu)",
             refused, (long long)h->lim.per_address, slow, evicted, hdr, body, s->connections,
             s->pending, top, most);
    }
    *r = *s;
}

/* Closes the connections past their deadline, every half second. */
static void *guard_reaper(void *arg)
{
    struct ch_httpd *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        int64_t now = ch_mono_ms();
        for (struct gconn *g = h->conns; g; g = g->next) {
            if (g->state == G_PENDING && now - g->since > h->lim.header_timeout_ms) {
                evict(h, g);
                h->st.header_timeouts++;
            } else if (g->state == G_BODY && now - g->since > h->lim.body_timeout_ms) {
                evict(h, g);
                h->st.body_timeouts++;
            }
        }
        if (h->n_struck_idle)
            forget_struck(h, now);
        guard_report(h, now);
        ch_cond_wait_until(&h->cv, &h->mu, now + 500);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static int64_t pick(int64_t set, int64_t def)
{
    return set > 0 ? set : def;
}

static int load_pem(const char *mod, const char *path, const char *what, char **out, size_t *len)
{
    int rc = ch_read_file(path, PEM_MAX, out, len);
    if (rc) {
        LOGE(mod, path, "cannot read the HTTPS %s: %s", what,
             rc == -EFBIG ? "larger than 256 KiB" : strerror(-rc));
        return CH_ECONFIG;
    }
    return 0;
}

static void httpd_free(struct ch_httpd *h)
{
    if (h->key)
        explicit_bzero(h->key, h->key_len);
    free(h->key);
    free(h->cert);
    while (h->conns) {
        struct gconn *g = h->conns;
        h->conns = g->next;
        free(g);
    }
    while (h->addrs) {
        struct gaddr *a = h->addrs;
        h->addrs = a->next;
        free(a);
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int ch_httpd_start(const struct ch_httpd_opts *o, struct ch_httpd **out)
{
    *out = NULL;
    struct ch_httpd *h = ch_xcalloc(1, sizeof *h);
    h->mod = o->mod;
    h->handler = o->handler;
    h->completed = o->completed;
    h->cls = o->cls;
    const struct cfg_http_limits *l = o->limits, *d = &o->defaults;
    struct cfg_http_limits none = {0};
    if (!l)
        l = &none;
    h->lim = (struct cfg_http_limits){
        .max = pick(l->max, d->max),
        .per_address = pick(l->per_address, d->per_address),
        .pending = pick(l->pending, d->pending),
        .pending_per_address = pick(l->pending_per_address, d->pending_per_address),
        .header_timeout_ms = pick(l->header_timeout_ms, d->header_timeout_ms),
        .body_timeout_ms = pick(l->body_timeout_ms, d->body_timeout_ms),
    };
    if (l->max && !l->pending) /* the default is half of max: of the max in use */
        h->lim.pending = h->lim.max / 2;
    pthread_mutex_init(&h->mu, NULL);
    ch_cond_init_monotonic(&h->cv);
    ch_strlcpy(h->bind, o->bind && *o->bind ? o->bind : "0.0.0.0", sizeof h->bind);
    if (h->lim.pending >= h->lim.max) {
        LOGE(h->mod, NULL,
             "connections: pending (%lld) must be below max (%lld): the rest is the reserve "
             "for whole requests",
             (long long)h->lim.pending, (long long)h->lim.max);
        httpd_free(h);
        return CH_ECONFIG;
    }
    h->https = o->https && o->https->cert_file;
    int rc = 0;
    if (h->https) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            LOGE(h->mod, NULL, "this libmicrohttpd has no TLS: HTTPS is not available");
            rc = CH_ECONFIG;
        }
        size_t n;
        if (!rc)
            rc = load_pem(h->mod, o->https->cert_file, "certificate", &h->cert, &n);
        if (!rc)
            rc = load_pem(h->mod, o->https->key_file, "key", &h->key, &h->key_len);
    }
    int fd = -1;
    if (!rc)
        rc = ch_http_listen(h->mod, o->bind, o->port, &fd, &h->port, &h->v6);
    if (rc) {
        httpd_free(h);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (h->v6)
        flags |= MHD_USE_IPv6;
    if (h->https)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, h->cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, h->key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    /* the logger first, so that MHD reports nothing through its own */
    h->d = MHD_start_daemon(
        flags, 0, guard_accept, h, guard_access, h, MHD_OPTION_EXTERNAL_LOGGER, ch_http_log,
        (void *)h->mod, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)h->lim.max, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
        MHD_OPTION_NOTIFY_CONNECTION, guard_notify, h, MHD_OPTION_NOTIFY_COMPLETED, guard_completed,
        h, MHD_OPTION_UNESCAPE_CALLBACK, ch_http_unescape, h, MHD_OPTION_ARRAY,
        h->https ? tls : tls + 3, MHD_OPTION_END);
    if (!h->d) {
        int e = errno ? errno : EIO;
        bool https = h->https;
        LOGE(h->mod, NULL, "cannot start the HTTP%s server on %s port %u: %s%s", https ? "S" : "",
             h->bind, h->port, strerror(e),
             https ? " (is the key the certificate's, and both PEM?)" : "");
        close(fd);
        httpd_free(h);
        return https ? CH_ECONFIG : -e;
    }
    h->next_report = ch_mono_ms() + REPORT_MS;
    if (pthread_create(&h->reaper, NULL, guard_reaper, h) == 0)
        h->reaper_started = true;
    else
        LOGE(h->mod, NULL, "cannot start the connection guard: deadlines are not enforced");
    *out = h;
    return 0;
}

uint16_t ch_httpd_port(const struct ch_httpd *h)
{
    return h ? h->port : 0;
}

bool ch_httpd_is_https(const struct ch_httpd *h)
{
    return h && h->https;
}

void ch_httpd_url(const struct ch_httpd *h, char *out, size_t n)
{
    snprintf(out, n, "http%s://%s%s%s:%u/", h->https ? "s" : "", h->v6 ? "[" : "", h->bind,
             h->v6 ? "]" : "", h->port);
}

void ch_httpd_get_stats(struct ch_httpd *h, struct ch_httpd_stats *out)
{
    pthread_mutex_lock(&h->mu);
    *out = h->st;
    pthread_mutex_unlock(&h->mu);
}

json_t *ch_httpd_stats_json(struct ch_httpd *h)
{
    struct ch_httpd_stats s;
    ch_httpd_get_stats(h, &s);
    return json_pack(
        "{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I}}", "https", h->https,
        "connections", (json_int_t)s.connections, "pending", (json_int_t)s.pending, "accepted",
        (json_int_t)s.accepted, "refused_address", (json_int_t)s.refused_address, "refused_slow",
        (json_int_t)s.refused_slow, "evicted", (json_int_t)s.evicted, "header_timeouts",
        (json_int_t)s.header_timeouts, "body_timeouts", (json_int_t)s.body_timeouts, "limits",
        "max", (json_int_t)h->lim.max, "per_address", (json_int_t)h->lim.per_address, "pending",
        (json_int_t)h->lim.pending, "pending_per_address", (json_int_t)h->lim.pending_per_address,
        "header_timeout_ms", (json_int_t)h->lim.header_timeout_ms, "body_timeout_ms",
        (json_int_t)h->lim.body_timeout_ms);
}

void ch_httpd_stop(struct ch_httpd *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (h->reaper_started)
        pthread_join(h->reaper, NULL);
    MHD_stop_daemon(h->d);
    httpd_free(h);
}

/* A state-changing request: POST, JSON, and if the browser says where it
 * comes from, from this very host. Returns 0 or the status to refuse with. */
unsigned ch_http_csrf_check(struct MHD_Connection *c, const char **msg)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncasecmp(ct, "application/json", 16) ||
        (ct[16] && ct[16] != ';' && ct[16] != ' ')) {
        *msg = "Content-Type must be application/json";
        return MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (origin && strcmp(origin, "null")) {
        const char *h = !strncmp(origin, "http://", 7)    ? origin + 7
                        : !strncmp(origin, "https://", 8) ? origin + 8
                                                          : NULL;
        if (!h || !host || strcasecmp(h, host)) {
            *msg = "cross-origin request refused";
            return MHD_HTTP_FORBIDDEN;
        }
    } else if (origin) {
        *msg = "cross-origin request refused";
        return MHD_HTTP_FORBIDDEN;
    }
    return 0;
}

bool ch_http_is_https(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_DAEMON);
    if (!ci || !ci->daemon)
        return false;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(ci->daemon, MHD_DAEMON_INFO_FLAGS);
    return di && (di->flags & MHD_USE_TLS);
}

bool ch_http_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (addr && inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (addr && inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
