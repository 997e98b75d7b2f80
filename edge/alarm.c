/* Placeholder until the alarm life cycle lands (see alarm.h). */
#include "alarm.h"
