/* Placeholder until the local console lands (see console.h). */
#include "console.h"
