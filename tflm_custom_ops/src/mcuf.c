/* Library-wide definitions (see mcuf/mcuf.h). */
#include "mcuf/mcuf.h"

const char *mcuf_version(void) { return MCUF_VERSION; }
