/* Placeholder until the rules engine lands (see rules.h). */
#include "rules.h"

int rules_check(const struct site_config *c)
{
    (void)c;
    return 0;
}
