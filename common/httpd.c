#include "httpd.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SSE_RETRY_MS 3000  /* EventSource reconnect delay */
#define SSE_BLOCK    16384 /* buffer libmicrohttpd gives the reader */

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
    if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 64)) {
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

void ch_http_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    LOGW(cls ? (const char *)cls : "http", "mhd", "%s", line);
}

void ch_http_security_headers(struct MHD_Response *r, bool api)
{
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

/* On the stream's own connection thread whenever libmicrohttpd can send
 * more: blocks until there is something to send (an event, the keepalive
 * comment, or the end of the stream). */
static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct ch_sse_client *cl = cls;
    struct ch_sse *s = cl->s;
    (void)pos;
    if (!cl->cur) {
        int64_t deadline = ch_mono_ms() + s->keepalive_ms;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !cl->behind && cl->n == 0 && ch_mono_ms() < deadline)
            ch_cond_wait_until(&s->cond, &s->mu, deadline);
        bool stop = s->stopping, behind = cl->behind;
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

enum MHD_Result ch_sse_open(struct ch_sse *s, struct MHD_Connection *c, char *(*first)(void *arg),
                            void *arg, void *ctx, const char *who, const char *addr,
                            enum MHD_Result (*busy)(struct MHD_Connection *c))
{
    struct ch_sse_client *cl = ch_xcalloc(1, sizeof *cl);
    cl->s = s;
    cl->fd = -1;
    cl->ctx = ctx;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        cl->fd = ci->connect_fd;
    ch_strlcpy(cl->who, who, sizeof cl->who);
    ch_strlcpy(cl->addr, addr, sizeof cl->addr);

    pthread_mutex_lock(&s->mu);
    bool full = s->n_clients >= s->max_clients, stopping = s->stopping;
    if (!full && !stopping) {
        cl->next = s->clients;
        if (s->clients)
            s->clients->prev = cl;
        s->clients = cl;
        s->n_clients++;
    }
    pthread_mutex_unlock(&s->mu);
    if (full || stopping) {
        LOGW(s->mod, addr, "event stream refused: %s", full ? "max_clients reached" : "stopping");
        free(cl->ctx);
        free(cl);
        return busy(c);
    }

    char head[32];
    snprintf(head, sizeof head, "retry: %d\n\n", SSE_RETRY_MS);
    char *snap = first ? first(arg) : NULL;
    size_t n = strlen(head) + (snap ? strlen(snap) : 0) + 1;
    cl->cur = ch_xmalloc(n);
    snprintf(cl->cur, n, "%s%s", head, snap ? snap : "");
    free(snap);
    cl->cur_len = strlen(cl->cur);

    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, cl, sse_free);
    if (!r) {
        sse_free(cl);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    ch_http_security_headers(r, true);
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    LOGD(s->mod, addr, "event stream of '%s' opened", who);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
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
