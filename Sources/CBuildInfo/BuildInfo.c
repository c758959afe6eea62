#include "CBuildInfo.h"

#ifndef DOGESTRY_GIT_COMMIT
#define DOGESTRY_GIT_COMMIT ""
#endif

const char *dogestry_build_commit(void) { return DOGESTRY_GIT_COMMIT; }
