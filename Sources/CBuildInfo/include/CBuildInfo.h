#ifndef DOGESTRY_CBUILDINFO_H
#define DOGESTRY_CBUILDINFO_H

/// The git commit the binary was built from: scripts/package passes it as
/// -Xcc -DDOGESTRY_GIT_COMMIT="<hex>"; "" in a build that did not.
const char *dogestry_build_commit(void);

#endif
