#ifndef DOGESTRY_CBUILDINFO_H
#define DOGESTRY_CBUILDINFO_H

/// The git commit the binary was built from (scripts/package writes it into the checkout it
/// builds, as commit.inc); "" in any other build.
const char *dogestry_build_commit(void);

#endif
