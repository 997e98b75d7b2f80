/* Placeholder until the local console lands. */
#ifndef CAREHUB_CONSOLE_H
#define CAREHUB_CONSOLE_H
#endif
