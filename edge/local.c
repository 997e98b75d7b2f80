/* Placeholder until the local MQTT publisher lands (see local.h). */
#include "local.h"
