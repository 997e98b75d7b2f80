/* The web console: "/" (index.html) and "/static/<file>", files of
 * api.www_dir, served without a token. Only safe paths of known file types
 * are opened (no "..", no hidden files, the file itself no symbolic link). */
#include "api_internal.h"
#include "hubcfg.h"
#include "util.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < CH_ARRAY_LEN(types); i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return NULL;
}

/* A path of the web console: "/" is index.html; otherwise segments of
 * [A-Za-z0-9_.-] not starting with a dot, no "..", a known file type. */
static bool safe_path(const char *p)
{
    if (p[0] != '/' || strlen(p) > PATH_MAX_LEN)
        return false;
    bool seg_start = true;
    for (const char *s = p + 1; *s; s++) {
        char ch = *s;
        if (ch == '/') {
            if (seg_start)
                return false; /* "//" */
            seg_start = true;
            continue;
        }
        if (seg_start && ch == '.')
            return false; /* ".x", "..", hidden files */
        seg_start = false;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return !seg_start && content_type(p);
}

enum MHD_Result serve_file(struct api *a, struct req *r, struct MHD_Connection *c, const char *url)
{
    /* "/" is the page; "/static/<file>" its assets, files of www_dir */
    const char *path = !strcmp(url, "/") ? "/index.html" : url;
    if (!strncmp(path, "/static/", 8))
        path += 7;
    if (!safe_path(path))
        return fail(r, c, 404, "not found");
    char full[PATH_MAX_LEN + 512];
    snprintf(full, sizeof full, "%s%s", a->cfg->api.www_dir, path);
    int fd = open(full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return fail(r, c, 404, "not found");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((size_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type(path));
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    ch_http_security_headers(resp, false);
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
