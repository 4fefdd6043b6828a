// The table of MCUF custom ops (see mcuf_ops.h).
//
// Each fused kernel adds one entry here, {"MCUF_<NAME>", Register_MCUF_<NAME>},
// next to its TFLMRegistration in glue/. No MCUF kernel exists yet, so the
// table is empty and registering the custom ops adds nothing.
#include "mcuf_ops.h"

const McufCustomOp* mcuf_custom_ops(size_t* count) {
  *count = 0;
  return nullptr;
}
