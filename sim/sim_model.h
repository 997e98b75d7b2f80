/* Built-in device models: the register maps of real meters found in care
 * homes and nurseries, and how engineering values are encoded into them.
 *
 * A model names its metrics (what the value generator and the scenario
 * act on) and lists its registers; each register says which metric it shows
 * and how. deploy/sim/README.md (meters) and deploy/sim/care-devices.md
 * (bed sensor, nurse-call panel, relay board) document the same maps for the
 * authors of the edge's device profiles; the tables in sim_model.c are the
 * truth. */
#ifndef CAREHUB_SIM_MODEL_H
#define CAREHUB_SIM_MODEL_H

#include "sim_value.h"

#include <modbus.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MODEL_MAX_METRICS 8

enum sim_table {
    SIM_HOLDING,  /* FC03 / FC06 / FC16 */
    SIM_INPUT,    /* FC04 */
    SIM_COIL,     /* FC01 / FC05 / FC15: outputs the master drives */
    SIM_DISCRETE, /* FC02: contacts the device reads */
};
#define SIM_TABLES 4

enum sim_enc {
    SIM_ENC_U16,      /* round(value * scale), clamped to 0..65535 */
    SIM_ENC_I16,      /* round(value * scale), clamped to -32768..32767, two's complement */
    SIM_ENC_F32_CDAB, /* IEEE-754 single over two registers, low word first */
    SIM_ENC_FLAG_GE,  /* 1 when value >= scale (a threshold), else 0 */
    SIM_ENC_UNIT,     /* the device's own slave address */
    SIM_ENC_ZERO,     /* reserved or unused: reads 0 */
    SIM_ENC_BIT,      /* COIL/DISCRETE: 1 when value >= 0.5, else 0 */
    SIM_ENC_OUTPUT,   /* COIL: what the master last wrote (off at start); no metric */
};

struct sim_reg {
    enum sim_table table;
    uint16_t addr; /* zero-based PDU address */
    enum sim_enc enc;
    const struct sim_metric *metric; /* one of the model's metrics; NULL for UNIT and ZERO */
    double scale;                    /* U16/I16: multiplier; FLAG_GE: threshold */
};

/* What a model's derive hook works on: the values of all its metrics at one
 * time, after the scenario. */
struct sim_derive {
    double *values;   /* one per metric, engineering units; the hook may change them */
    const bool *held; /* one per metric: a scenario event decides it now (leave it alone) */
    uint64_t seed, dev_key;
    int64_t t_ms; /* Unix time the values are for */
    int utc_offset_min;
};

struct sim_model {
    const char *name; /* as written in the simulator config: "jxct-th" */
    uint8_t default_unit;
    const struct sim_metric *metrics[SIM_MODEL_MAX_METRICS];
    size_t nmetrics;
    const struct sim_reg *regs;
    size_t nregs;
    /* Makes metrics that depend on each other agree once a scenario has
     * moved one of them (a bed whose resident a scenario takes out shows no
     * heart rate either). NULL when the metrics are independent. */
    void (*derive)(const struct sim_model *m, struct sim_derive *d);
    /* Not a Modbus slave: a device that streams UART frames on its own (a
     * 60 GHz sleep radar, sim_radar.h); it has no registers and lives on a
     * `radar:` endpoint. */
    bool radar;
};

/* What a care bracelet (deploy/profiles/care-band.yaml) says in its
 * advertisements, in this order: battery %, SOS, fall and worn flags, heart
 * rate. Scenario `set:` events on a wearable name these. */
enum {
    SIM_WEAR_BATTERY,
    SIM_WEAR_SOS,
    SIM_WEAR_FALL,
    SIM_WEAR_WORN,
    SIM_WEAR_HR,
    SIM_WEAR_METRICS
};
extern const struct sim_metric *const sim_wearable_metrics[SIM_WEAR_METRICS];

/* The model called name, or NULL. Returns a static table. */
const struct sim_model *sim_model_find(const char *name);

/* Writes the names of all Modbus models, space separated, into buf (for
 * error messages); sim_model_radar_names() those of the radar models. */
void sim_model_names(char *buf, size_t n);
void sim_model_radar_names(char *buf, size_t n);

/* Index of metric name in model m, or -1. */
int sim_model_metric(const struct sim_model *m, const char *name);

/* Whether m has registers in table t. */
bool sim_model_has_table(const struct sim_model *m, enum sim_table t);

/* A libmodbus mapping that covers every register and bit of m, all zero. Caller
 * frees with modbus_mapping_free(). Returns NULL (errno set) on failure. */
modbus_mapping_t *sim_model_mapping_new(const struct sim_model *m);

/* Encodes values (one per metric of m, in engineering units) and the
 * device's address into map (from sim_model_mapping_new for the same m).
 * Coils (SIM_ENC_OUTPUT) are left as they are: they hold what the master
 * wrote. */
void sim_model_encode(const struct sim_model *m, const double *values, uint8_t unit,
                      modbus_mapping_t *map);

/* Register encodings, exposed for tests. */
uint16_t sim_model_enc_u16(double value, double scale);
uint16_t sim_model_enc_i16(double value, double scale);
void sim_model_enc_f32_cdab(double value, uint16_t out[2]);

#endif
