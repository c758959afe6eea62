#include "CBuildInfo.h"

// scripts/package writes commit.inc (`#define DOGESTRY_GIT_COMMIT "<hex>"`) into the checkout it
// builds; a file rather than a compiler flag, so the rest of the build stays incremental.
#if __has_include("commit.inc")
#include "commit.inc"
#endif
#ifndef DOGESTRY_GIT_COMMIT
#define DOGESTRY_GIT_COMMIT ""
#endif

const char *dogestry_build_commit(void) { return DOGESTRY_GIT_COMMIT; }
