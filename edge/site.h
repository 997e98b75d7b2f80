/* Site configuration of care-edge: the site file and the device profiles it
 * names, validated as a whole. See edge/site_model.h and drivers/model.h for the model and
 * schemas/site-config.schema.json / profile.schema.json for the contract. */
#ifndef CAREHUB_EDGE_SITE_H
#define CAREHUB_EDGE_SITE_H

#include "site_model.h"

struct cfg_file;

/* A rule pack file: rules shared by many sites (deploy/rules/). */
struct rule_pack {
    char *id;
    char *description;
    struct cfg_list rules; /* struct rule_cfg */
    char *path;
};

/* Loaded configuration plus the YAML documents its nodes point into (kept
 * so later checks, e.g. a driver's, can report file:line). */
struct site {
    struct site_config cfg;
    struct cfg_file *file;
    size_t n_profile_files;
    struct cfg_file **profile_files;
    size_t n_packs;
    struct rule_pack *packs;
    struct cfg_file **pack_files;
};

/* Loads and validates path and every profile it names. Every problem is
 * reported on stderr as file:line:column with the key. Returns 0 and fills
 * *out (caller frees with site_free), CH_ECONFIG, or -errno when the file
 * cannot be read. */
int site_load(const char *path, struct site *out);

/* The keys every bus has (id, type, backoff_max); the rest are its
 * driver's (driver.h: driver_bus_variants). */
extern const struct cfg_key site_bus_keys[];

/* Releases the configuration. */
void site_free(struct site *s);

/* The names of a rule kind (rule_kinds, "sos", ...) and a locale ("zh-CN"). */
extern const struct cfg_enum rule_kinds[];
const char *rule_kind_name(int kind);
const char *site_locale_name(int locale);

/* Display names (borrowed from c), or NULL when none is configured: of a
 * room or zone id (a BLE zone's name, else rooms[].name), and of a bed
 * (rooms[].beds[]; the bed of that id in room first, else in any room). */
const char *site_room_name(const struct site_config *c, const char *id);
const char *site_bed_name(const struct site_config *c, const char *room, const char *bed);

/* Loads one device profile file into *out (zeroed by the caller) and checks
 * it. Returns 0 (out owns its strings; free with profile_free; *file_out,
 * if not NULL, gets the open document: cfg_file_close it), CH_ECONFIG after
 * reporting, or -errno. */
int profile_load(const char *path, struct profile *out, struct cfg_file **file_out);
void profile_free(struct profile *p);

/* Finds a profile by id; NULL if none. */
const struct profile *site_profile(const struct site *s, const char *id);

#endif
