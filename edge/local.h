#ifndef CAREHUB_LOCAL_H
#define CAREHUB_LOCAL_H
#endif
