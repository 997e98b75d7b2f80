/* Declarative YAML configuration.
 *
 * A section of a config file is described once, by a table of struct cfg_key:
 * the key, its type, where the value goes in a C struct, whether it is
 * required, its default and range. cfg_load() walks the YAML nodes (libfyaml)
 * against the table; every problem is reported with fy_node_report(), which
 * prints "file:line:column: error: ..." and the offending line, and names the
 * key. Unknown keys are errors. All problems in a file are reported before
 * cfg_load() fails, so an installer fixes them in one pass.
 *
 * Storage per type (at .offset in the target struct):
 *   CFG_STR, CFG_ID, CFG_PATH  char *   (heap, owned by the struct; cfg_free)
 *   CFG_INT                    int64_t
 *   CFG_FLOAT                  double
 *   CFG_BOOL                   bool
 *   CFG_DURATION               int64_t  milliseconds ("500ms", "10s", "5m", "1h")
 *   CFG_ENUM                   int      (value from .enums)
 *   CFG_MAP                    an embedded struct described by .sub
 *   CFG_LIST                   struct cfg_list; elements of .elem_size described by .sub
 *   CFG_STRLIST                struct cfg_list of char *
 *   CFG_PARAMS                 struct cfg_list of struct cfg_param: a mapping of
 *                              free names (identifiers) to numbers, e.g.
 *                              "params: {hr_low: 40, hr_high: 130}"
 *   CFG_NAME                   char *: a display name (ch_valid_name: any
 *                              language, e.g. "3楼 东区 301")
 *   CFG_TEXT                   struct cfg_text: text for people, a plain
 *                              string or one per locale, e.g.
 *                              "message: {zh-CN: '{who} 跌倒', en: 'Fall: {who}'}"
 *   CFG_NODE                   struct fy_node * (borrowed from the document): any
 *                              value, for a section another module parses itself
 *                              (cfg_parse_node), e.g. care-edge's notify:
 *
 * CFG_PATH values are made absolute relative to the directory of the file.
 * A list element struct may keep its YAML node (for later semantic errors,
 * e.g. "unknown profile") at .node_offset in its table's CFG_LIST entry. */
#ifndef CAREHUB_CFG_H
#define CAREHUB_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fy_node;

enum cfg_type {
    CFG_STR,
    CFG_ID,
    CFG_PATH,
    CFG_INT,
    CFG_FLOAT,
    CFG_BOOL,
    CFG_DURATION,
    CFG_ENUM,
    CFG_MAP,
    CFG_LIST,
    CFG_STRLIST,
    CFG_PARAMS,
    CFG_NAME,
    CFG_TEXT,
    CFG_NODE,
};

struct cfg_enum {
    const char *name;
    int value;
};

struct cfg_list {
    void *items;
    size_t n;
};

/* One entry of a CFG_PARAMS mapping. node is the value's node (for later
 * semantic errors). */
struct cfg_param {
    char *name;
    double value;
    struct fy_node *node;
};

/* The value of param name in a CFG_PARAMS list, or NULL. */
const struct cfg_param *cfg_param_find(const struct cfg_list *params, const char *name);

/* A CFG_TEXT value: text (a plain string; NULL when given per locale) or
 * locales (struct cfg_text_locale, in file order). */
struct cfg_text_locale {
    char *locale; /* "zh-CN", "en", ... */
    char *text;
};
struct cfg_text {
    char *text;
    struct cfg_list locales;
};

/* The text of t for locale (borrowed), choosing in this order: the same
 * locale, one of the same language ("zh" for "zh-CN"), the plain string,
 * English, the first given. NULL when t is empty. */
const char *cfg_text_get(const struct cfg_text *t, const char *locale);

struct cfg_key {
    const char *key;
    enum cfg_type type;
    size_t offset;
    bool required;
    const char *def;              /* default, written as it would be in YAML; NULL: none */
    double min, max;              /* range check when min < max (ms for durations) */
    const struct cfg_enum *enums; /* CFG_ENUM: terminated by {NULL, 0} */
    const struct cfg_key *sub;    /* CFG_MAP / CFG_LIST: table of the nested struct */
    size_t elem_size;             /* CFG_LIST: size of one element */
    long node_offset;             /* CFG_LIST: where an element keeps its struct fy_node *, or -1 */
    /* CFG_LIST of mappings whose keys depend on one of them (a bus's type):
     * variant_key names a CFG_ENUM key of .sub, and each element is read
     * with .sub and the keys of the variant of its value. A key of another
     * variant is refused as such ("does not apply to a modbus-tcp bus"). */
    const char *variant_key;
    const struct cfg_variant *variants; /* terminated by {.keys = NULL} */
};

struct cfg_variant {
    int value;                  /* of the variant_key's enum */
    const struct cfg_key *keys; /* besides .sub's; same struct */
};

/* Terminates every table. */
#define CFG_END                                                                                    \
    {                                                                                              \
        .key = NULL                                                                                \
    }

struct cfg_file;

/* Parses the YAML file at path into *out (zeroed by the caller) using table.
 * On success returns 0 and, if file_out is non-NULL, the open document for
 * later semantic checks (caller frees with cfg_file_close; *out owns its own
 * strings either way). On error reports every problem on stderr and returns
 * CH_ECONFIG (or -errno if the file cannot be read), with nothing left
 * allocated in *out. */
int cfg_load(const char *path, const struct cfg_key *table, void *out, struct cfg_file **file_out);

/* As cfg_load, and when errors is non-NULL, a file that is YAML and a
 * mapping is kept whatever errors its keys have: *errors counts those
 * reported (0 if none), *out holds what parsed (a key in error or missing
 * is left unset: NULL, 0) and *file_out is open, for the caller's further
 * checks, so that one run reports every error of a file; the caller frees
 * both (file_out must then be non-NULL). Returns 0, or CH_ECONFIG / -errno
 * when nothing is left to check (unreadable, not YAML, not a mapping). */
int cfg_load_all(const char *path, const struct cfg_key *table, void *out,
                 struct cfg_file **file_out, int *errors);

void cfg_file_close(struct cfg_file *f);

/* Levenshtein distance of two short strings (99 beyond 40 bytes): within
 * 2, a name is suggested for a mistyped one ("did you mean 'interval'?"). */
size_t cfg_edit_distance(const char *a, const char *b);

/* Parses the mapping node map (a section handed over as CFG_NODE, or any
 * node of a document) into *out (zeroed by the caller) using table, the
 * same way cfg_load() parses a file; CFG_PATH values stay as written.
 * Returns 0, or CH_ECONFIG after reporting every problem; unlike cfg_load()
 * what was parsed stays in *out either way, so that the caller can go on
 * checking the rest of its section in the same pass (free it with
 * cfg_free). */
int cfg_parse_node(struct fy_node *map, const struct cfg_key *table, void *out);

/* The root node of a loaded file (borrowed; valid until cfg_file_close). */
struct fy_node *cfg_file_root(const struct cfg_file *f);

/* The absolute directory of a loaded file (borrowed). */
const char *cfg_file_dir(const struct cfg_file *f);

/* Resolves rel against dir: returns a heap copy of rel if it is absolute,
 * else "dir/rel". Caller frees. */
char *cfg_resolve_path(const char *dir, const char *rel);

/* Frees the strings and lists that cfg_load() stored in obj. */
void cfg_free(const struct cfg_key *table, void *obj);

/* Reports an error at the value of key in mapping node map (at map itself if
 * the key is absent), printf style; the message should name the key. */
void cfg_report(struct fy_node *map, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The TLS section shared by every MQTT client config (care-edge's uplink,
 * care-hub's subscriber): CFG_MAP with .sub = cfg_tls_keys. */
struct cfg_tls {
    char *ca_file;   /* CA bundle that must have signed the broker's certificate */
    char *cert_file; /* client certificate, if the broker asks for one */
    char *key_file;
    bool verify; /* check the broker's certificate and host name (default true) */
};
extern const struct cfg_key cfg_tls_keys[];

/* An HTTP server's HTTPS (care-edge's console, care-hub's API): both files,
 * PEM; the certificate file may hold the chain after the server's own. */
struct cfg_https {
    char *cert_file;
    char *key_file;
};
extern const struct cfg_key cfg_https_keys[];

/* An HTTP server's connection limits (httpd.h says what each does); 0 means
 * the server's default. */
struct cfg_http_limits {
    int64_t max;                 /* connections at once */
    int64_t per_address;         /* connections at once from one address */
    int64_t pending;             /* of them without a complete request, all addresses */
    int64_t pending_per_address; /* the same, from one address */
    int64_t header_timeout_ms;   /* from connecting (or the previous answer) to the headers */
    int64_t body_timeout_ms;     /* from the headers to the whole body */
};
extern const struct cfg_key cfg_http_limit_keys[];

/* The log levels of log.h as a CFG_ENUM ("error", "warn", "info", "debug"). */
extern const struct cfg_enum cfg_log_levels[];

/* Looks up the enum name for a value; "?" if none. */
const char *cfg_enum_name(const struct cfg_enum *e, int value);

#endif
