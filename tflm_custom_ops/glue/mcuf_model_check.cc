// A .tflite checked before TFLM reads it (see mcuf_model_check.h).
//
// Mirrors what TFLM's micro_allocator.cc and micro_allocation_info.cc read
// without checking: Tensor.buffer as an index into Model.buffers, the
// buffer's data as the tensor's bytes, Operator.opcode_index, tensor indices
// of operators and subgraphs, the OfflineMemoryAllocation buffer's [version,
// subgraph, tensor count, offsets...] words, and quantisation that TFLM's
// builtin kernels abort on (QuantizeMultiplier's and the int8 kernels'
// checks) instead of failing Prepare.
#include "mcuf_model_check.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "flatbuffers/flatbuffers.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

constexpr int64_t kMaxBytes = INT32_MAX;
constexpr const char* kOfflinePlan = "OfflineMemoryAllocation";

bool Refuse(char* reason, size_t reason_size, const char* format, ...) {
  va_list args;
  va_start(args, format);
  if (reason != nullptr && reason_size > 0) std::vsnprintf(reason, reason_size, format, args);
  va_end(args);
  return false;
}

// Bytes of one element of `type`, 0 for a type whose size TFLM derives otherwise.
int64_t ElementBytes(tflite::TensorType type) {
  switch (type) {
    case tflite::TensorType_INT8: case tflite::TensorType_UINT8: case tflite::TensorType_BOOL:
      return 1;
    case tflite::TensorType_INT16: case tflite::TensorType_UINT16: case tflite::TensorType_FLOAT16:
      return 2;
    case tflite::TensorType_INT32: case tflite::TensorType_UINT32: case tflite::TensorType_FLOAT32:
      return 4;
    case tflite::TensorType_INT64: case tflite::TensorType_UINT64: case tflite::TensorType_FLOAT64:
    case tflite::TensorType_COMPLEX64:
      return 8;
    default:
      return 0;
  }
}

bool Packed(const tflite::Tensor& tensor) { return tensor.type() == tflite::TensorType_INT4; }

// The tensor's bytes from its shape (INT4: two values a byte, as TFLM packs
// them), or -1 when a dimension is negative or they exceed kMaxBytes.
int64_t ShapeBytes(const tflite::Tensor& tensor) {
  int64_t bytes = Packed(tensor) ? 1 : ElementBytes(tensor.type());
  if (tensor.shape() != nullptr) {
    for (const int32_t dim : *tensor.shape()) {
      if (dim < 0) return -1;
      bytes *= dim;
      if (bytes > 2 * kMaxBytes) return -1;
    }
  }
  bytes = Packed(tensor) ? (bytes + 1) / 2 : bytes;
  return bytes > kMaxBytes ? -1 : bytes;
}

// Why the tensor's quantisation would make TFLM's kernels abort or read out
// of bounds (a non-finite or non-positive scale, zero points not one per
// scale or outside the type's range), or nullptr.
const char* QuantizationProblem(const tflite::Tensor& tensor) {
  const tflite::QuantizationParameters* quantization = tensor.quantization();
  if (quantization == nullptr || quantization->scale() == nullptr ||
      quantization->scale()->size() == 0) {
    return nullptr;
  }
  const auto* zero_points = quantization->zero_point();
  if (zero_points == nullptr || zero_points->size() != quantization->scale()->size()) {
    return "not one zero point per scale";
  }
  for (const float scale : *quantization->scale()) {
    if (!(scale > 0.0f) || !std::isfinite(scale)) return "a scale that is not finite and positive";
  }
  int64_t low = INT32_MIN, high = INT32_MAX;
  switch (tensor.type()) {
    case tflite::TensorType_INT8: low = -128; high = 127; break;
    case tflite::TensorType_UINT8: low = 0; high = 255; break;
    case tflite::TensorType_INT16: low = -32768; high = 32767; break;
    case tflite::TensorType_INT4: low = -8; high = 7; break;
    default: break;
  }
  for (const int64_t zero_point : *zero_points) {
    if (zero_point < low || zero_point > high) return "a zero point outside its type's range";
  }
  return nullptr;
}

bool IndicesOk(const flatbuffers::Vector<int32_t>* indices, int64_t count, bool optional) {
  if (indices == nullptr) return true;
  for (const int32_t index : *indices) {
    if (index >= count || index < (optional ? -1 : 0)) return false;
  }
  return true;
}

}  // namespace

bool mcuf_check_model(const uint8_t* data, size_t size, char* reason, size_t reason_size) {
  flatbuffers::Verifier verifier(data, size);
  if (!tflite::VerifyModelBuffer(verifier)) {
    return Refuse(reason, reason_size, "not a .tflite flatbuffer (the schema's verifier refuses it)");
  }
  const tflite::Model* model = tflite::GetModel(data);
  const auto* buffers = model->buffers();
  const auto* subgraphs = model->subgraphs();
  const auto* codes = model->operator_codes();
  if (buffers == nullptr || subgraphs == nullptr || subgraphs->size() < 1 || codes == nullptr) {
    return Refuse(reason, reason_size, "no buffers, subgraphs or operator codes");
  }
  for (flatbuffers::uoffset_t s = 0; s < subgraphs->size(); ++s) {
    const tflite::SubGraph* subgraph = subgraphs->Get(s);
    const auto* tensors = subgraph->tensors();
    const int64_t count = tensors == nullptr ? 0 : tensors->size();
    for (int64_t t = 0; t < count; ++t) {
      const tflite::Tensor* tensor = tensors->Get(static_cast<flatbuffers::uoffset_t>(t));
      const int64_t bytes = ShapeBytes(*tensor);
      if (bytes < 0) {
        return Refuse(reason, reason_size, "tensor %lld has a negative dimension or over %lld bytes",
                      static_cast<long long>(t), static_cast<long long>(kMaxBytes));
      }
      const char* problem = QuantizationProblem(*tensor);
      if (problem != nullptr) {
        return Refuse(reason, reason_size, "tensor %lld has %s", static_cast<long long>(t), problem);
      }
      if (tensor->buffer() >= buffers->size()) {
        return Refuse(reason, reason_size, "tensor %lld names buffer %u of %u",
                      static_cast<long long>(t), tensor->buffer(), buffers->size());
      }
      const auto* contents = buffers->Get(tensor->buffer())->data();
      if (contents != nullptr && contents->size() > 0 &&
          (ElementBytes(tensor->type()) > 0 || Packed(*tensor)) &&
          static_cast<int64_t>(contents->size()) != bytes) {
        return Refuse(reason, reason_size, "tensor %lld has %u bytes of data, its shape %lld",
                      static_cast<long long>(t), contents->size(), static_cast<long long>(bytes));
      }
    }
    if (!IndicesOk(subgraph->inputs(), count, false) || !IndicesOk(subgraph->outputs(), count, false)) {
      return Refuse(reason, reason_size, "subgraph %u names a tensor it lacks", s);
    }
    const auto* operators = subgraph->operators();
    for (flatbuffers::uoffset_t o = 0; operators != nullptr && o < operators->size(); ++o) {
      const tflite::Operator* op = operators->Get(o);
      if (op->opcode_index() >= codes->size() || !IndicesOk(op->inputs(), count, true) ||
          !IndicesOk(op->outputs(), count, false) || !IndicesOk(op->intermediates(), count, false)) {
        return Refuse(reason, reason_size, "operator %u names an op code or tensor the model lacks", o);
      }
    }
  }
  const auto* metadata = model->metadata();
  for (flatbuffers::uoffset_t m = 0; metadata != nullptr && m < metadata->size(); ++m) {
    const tflite::Metadata* entry = metadata->Get(m);
    if (entry->name() == nullptr || std::strcmp(entry->name()->c_str(), kOfflinePlan) != 0) continue;
    if (entry->buffer() >= buffers->size()) {
      return Refuse(reason, reason_size, "%s names buffer %u of %u", kOfflinePlan, entry->buffer(),
                    buffers->size());
    }
    const auto* words = buffers->Get(entry->buffer())->data();
    const auto* tensors = subgraphs->Get(0)->tensors();
    const uint32_t tensor_count = tensors == nullptr ? 0 : tensors->size();
    uint32_t planned = 0;
    if (words != nullptr && words->size() >= 12) std::memcpy(&planned, words->data() + 8, 4);
    if (words == nullptr || words->size() < 12 || planned != tensor_count ||
        words->size() != 4 * (3 + static_cast<size_t>(tensor_count))) {
      return Refuse(reason, reason_size, "%s does not hold one offset for each of the %u tensors",
                    kOfflinePlan, tensor_count);
    }
    // TFLM places a tensor at its offset unchecked: -1 (planned online) or an
    // offset whose tensor ends within int32.
    for (uint32_t t = 0; t < tensor_count; ++t) {
      int32_t offset = 0;
      std::memcpy(&offset, words->data() + 4 * (3 + static_cast<size_t>(t)), 4);
      if (offset < -1 || offset + ShapeBytes(*tensors->Get(t)) > kMaxBytes) {
        return Refuse(reason, reason_size, "%s places tensor %u at offset %d", kOfflinePlan, t,
                      static_cast<int>(offset));
      }
    }
  }
  return true;
}
