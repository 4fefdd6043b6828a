// The table of MCUF custom ops (see mcuf_ops.h).
//
// Each fused kernel has one entry here, {"MCUF_<NAME>", Register_MCUF_<NAME>},
// its TFLMRegistration in glue/<name>_op.cc.
#include "mcuf_ops.h"

namespace {

const McufCustomOp kOps[] = {
    {"MCUF_ATTENTION", Register_MCUF_ATTENTION},
    {"MCUF_MLP", Register_MCUF_MLP},
    {"MCUF_PATCH_EMBED", Register_MCUF_PATCH_EMBED},
};

}  // namespace

const McufCustomOp* mcuf_custom_ops(size_t* count) {
  *count = sizeof(kOps) / sizeof(kOps[0]);
  return kOps;
}
