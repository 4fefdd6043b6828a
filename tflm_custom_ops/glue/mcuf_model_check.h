// A .tflite checked before TFLM reads it: TFLM trusts its model (it runs no
// flatbuffer verifier and indexes the model's vectors with the model's own
// numbers), so a damaged or hostile file can make it read out of bounds
// before any op's Prepare runs. mcuf_check_model refuses such a file with one
// line, so that a firmware or the host runner gets an error status instead.
#ifndef MCUF_GLUE_MCUF_MODEL_CHECK_H
#define MCUF_GLUE_MCUF_MODEL_CHECK_H

#include <cstddef>
#include <cstdint>

// Whether `data` (`size` bytes) is a model TFLM can be given: a flatbuffer
// the TFLite schema's verifier accepts, whose tensor, buffer and op-code
// indices are in range, whose constant buffers hold exactly their tensor's
// bytes (shapes non-negative, at most 2^31 - 1 bytes), and whose
// OfflineMemoryAllocation metadata, when present, has one offset per tensor
// (-1, or at least 0 with the tensor ending within int32), and whose
// quantised tensors have finite positive scales and one zero point per scale
// within their type's range.
// On failure, `reason` (`reason_size` bytes) receives one line saying why.
bool mcuf_check_model(const uint8_t* data, size_t size, char* reason,
                      size_t reason_size);

#endif  // MCUF_GLUE_MCUF_MODEL_CHECK_H
