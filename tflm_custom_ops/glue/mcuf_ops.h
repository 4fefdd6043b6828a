// TFLM glue of the MCUF custom ops: the one place an op resolver learns them.
//
// Firmware and the host runner call mcuf_register_custom_ops(resolver) after
// adding the builtins their model needs; it adds every MCUF_* op this library
// implements under the custom-op name our graph compiler writes. Size the
// resolver for the builtins plus mcuf_custom_op_count() more ops.
#ifndef MCUF_GLUE_MCUF_OPS_H
#define MCUF_GLUE_MCUF_OPS_H

#include <cstddef>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

// One custom op: its name in the .tflite and its TFLM registration.
struct McufCustomOp {
  const char* name;
  const TFLMRegistration* (*registration)();
};

// The registrations, one per glue/<kind>_op.cc.
const TFLMRegistration* Register_MCUF_MLP();
const TFLMRegistration* Register_MCUF_ATTENTION();
const TFLMRegistration* Register_MCUF_PATCH_EMBED();

// The MCUF ops this library implements (glue/mcuf_ops.cc); *count receives
// how many.
const McufCustomOp* mcuf_custom_ops(size_t* count);

inline size_t mcuf_custom_op_count() {
  size_t count = 0;
  mcuf_custom_ops(&count);
  return count;
}

// Adds every MCUF op to `resolver`; fails (with TFLM's own message) when the
// resolver has no room left or already holds an op of the same name.
template <unsigned int tOpCount>
TfLiteStatus mcuf_register_custom_ops(
    tflite::MicroMutableOpResolver<tOpCount>& resolver) {
  size_t count = 0;
  const McufCustomOp* ops = mcuf_custom_ops(&count);
  for (size_t i = 0; i < count; ++i) {
    TF_LITE_ENSURE_STATUS(resolver.AddCustom(ops[i].name, ops[i].registration()));
  }
  return kTfLiteOk;
}

#endif  // MCUF_GLUE_MCUF_OPS_H
