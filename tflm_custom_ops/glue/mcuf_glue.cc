// Shared TFLM glue of the MCUF ops (see mcuf_glue.h).
//
// Follows TFLM's builtin kernels (tensorflow/lite/micro/kernels/
// fully_connected_common.cc, softmax_common.cc): tensors are read in Prepare
// through MicroContext::AllocateTempInputTensor and freed again; errors are
// MicroPrintf lines naming the operator and the tensor's role.
#include "mcuf_glue.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_utils.h"

namespace mcuf_glue {
namespace {

// A temporary TfLiteTensor of operator input `index`, freed on scope exit.
class TempInput {
 public:
  TempInput(TfLiteContext* context, const TfLiteNode* node, int index)
      : micro_context_(tflite::GetMicroContext(context)),
        tensor_(micro_context_->AllocateTempInputTensor(node, index)) {}
  ~TempInput() {
    if (tensor_ != nullptr) micro_context_->DeallocateTempTfLiteTensor(tensor_);
  }
  TempInput(const TempInput&) = delete;
  TempInput& operator=(const TempInput&) = delete;
  TfLiteTensor* get() const { return tensor_; }

 private:
  tflite::MicroContext* micro_context_;
  TfLiteTensor* tensor_;
};

}  // namespace

const TfLiteAffineQuantization* Affine(const TfLiteTensor* tensor) {
  if (tensor->quantization.type != kTfLiteAffineQuantization) return nullptr;
  const auto* affine =
      static_cast<const TfLiteAffineQuantization*>(tensor->quantization.params);
  if (affine == nullptr || affine->scale == nullptr ||
      affine->zero_point == nullptr || affine->scale->size < 1 ||
      affine->zero_point->size < 1) {
    return nullptr;
  }
  return affine;
}

bool Int8Quant(double scale, int64_t zero_point) {
  return scale > 0.0 && std::isfinite(scale) && zero_point >= -128 && zero_point <= 127;
}

int64_t Elements(const TfLiteTensor* tensor) {
  int64_t count = 1;
  for (int i = 0; i < tensor->dims->size; ++i) {
    const int dim = tensor->dims->data[i];
    if (dim < 0) return -1;
    count *= dim;
    if (count > kMaxElements) return -1;
  }
  return count;
}

TfLiteStatus ReadOptions(TfLiteContext* context, const TfLiteNode* node,
                         const char* op, Options* options) {
  (void)context;
  if (node->custom_initial_data == nullptr ||
      node->custom_initial_data_size == 0) {
    MicroPrintf("%s: no custom options (a flexbuffer map is expected)", op);
    return kTfLiteError;
  }
  const uint8_t* data = static_cast<const uint8_t*>(node->custom_initial_data);
  if (!flexbuffers::VerifyBuffer(data, node->custom_initial_data_size)) {
    MicroPrintf("%s: custom options are not a valid flexbuffer (%d bytes)", op,
                static_cast<int>(node->custom_initial_data_size));
    return kTfLiteError;
  }
  const flexbuffers::Reference root =
      flexbuffers::GetRoot(data, node->custom_initial_data_size);
  if (!root.IsMap()) {
    MicroPrintf("%s: custom options are not a flexbuffer map", op);
    return kTfLiteError;
  }
  options->root = root.AsMap();
  const flexbuffers::Reference scale = options->root["scale"];
  const flexbuffers::Reference zero_point = options->root["zero_point"];
  if (!scale.IsMap() || !zero_point.IsMap()) {
    MicroPrintf("%s: custom options lack the 'scale' and 'zero_point' maps", op);
    return kTfLiteError;
  }
  options->scale = scale.AsMap();
  options->zero_point = zero_point.AsMap();
  return kTfLiteOk;
}

bool Has(const Options& options, const char* role) {
  return !options.scale[role].IsNull();
}

TfLiteStatus RoleQuant(TfLiteContext* context, const Options& options,
                       const char* op, const char* role, mcuf_quant* quant) {
  (void)context;
  if (role == nullptr) {
    MicroPrintf("%s: custom options lack an intermediate tensor the block needs", op);
    return kTfLiteError;
  }
  const flexbuffers::Reference scale = options.scale[role];
  const flexbuffers::Reference zero_point = options.zero_point[role];
  if (!scale.IsFloat() || !zero_point.IsInt()) {
    MicroPrintf("%s: custom options have no float scale and int zero point for "
                "tensor '%s'", op, role);
    return kTfLiteError;
  }
  // fuse.py stores the float32 scale as a flexbuffer float: exact as a double.
  const double scale_value = scale.AsDouble();
  const int64_t zero_point_value = zero_point.AsInt64();
  if (!Int8Quant(scale_value, zero_point_value) || scale_value > FLT_MAX) {
    MicroPrintf("%s: tensor '%s' has scale %f, zero point %lld: not int8 "
                "quantisation", op, role, scale_value,
                static_cast<long long>(zero_point_value));
    return kTfLiteError;
  }
  quant->scale = static_cast<float>(scale_value);
  quant->zero_point = static_cast<int32_t>(zero_point_value);
  return kTfLiteOk;
}

const char* FirstRole(const Options& options, const char* const* roles) {
  for (; *roles != nullptr; ++roles) {
    if (Has(options, *roles)) return *roles;
  }
  return nullptr;
}

int32_t WeightBits(const TfLiteTensor* weights) {
  return weights->type == kTfLiteInt4 ? 4 : 8;
}

bool Present(const TfLiteNode* node, int index) {
  return index >= 0 && index < node->inputs->size &&
         node->inputs->data[index] >= 0;
}

TfLiteStatus InputQuant(TfLiteContext* context, TfLiteNode* node,
                        const char* op, int index, const char* role,
                        mcuf_quant* quant) {
  TempInput tensor(context, node, index);
  if (tensor.get() == nullptr) {
    MicroPrintf("%s: input %d ('%s') is missing", op, index, role);
    return kTfLiteError;
  }
  const TfLiteAffineQuantization* affine = Affine(tensor.get());
  if (affine == nullptr) {
    MicroPrintf("%s: input %d ('%s') has no affine quantisation", op, index,
                role);
    return kTfLiteError;
  }
  quant->scale = affine->scale->data[0];
  quant->zero_point = affine->zero_point->data[0];
  if (!Int8Quant(quant->scale, quant->zero_point)) {
    MicroPrintf("%s: input %d ('%s') has scale %f, zero point %d: not int8 "
                "quantisation", op, index, role, static_cast<double>(quant->scale),
                static_cast<int>(quant->zero_point));
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus CheckInput(TfLiteContext* context, TfLiteNode* node,
                        const char* op, int index, const char* role,
                        TfLiteType type, int elements, bool constant) {
  TempInput tensor(context, node, index);
  if (tensor.get() == nullptr) {
    MicroPrintf("%s: input %d ('%s') is missing", op, index, role);
    return kTfLiteError;
  }
  if (tensor.get()->type != type) {
    MicroPrintf("%s: input %d ('%s') is %s, %s expected", op, index, role,
                TfLiteTypeGetName(tensor.get()->type), TfLiteTypeGetName(type));
    return kTfLiteError;
  }
  if (elements >= 0 && Elements(tensor.get()) != elements) {
    MicroPrintf("%s: input %d ('%s') has %lld elements, %d expected", op, index,
                role, static_cast<long long>(Elements(tensor.get())), elements);
    return kTfLiteError;
  }
  if (constant && !tflite::IsConstantTensor(tensor.get())) {
    MicroPrintf("%s: input %d ('%s') must be a constant", op, index, role);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus PrepareFcLayer(TfLiteContext* context, TfLiteNode* node,
                            const char* op, const char* role, int weights_index,
                            int bias_index, int input_depth, mcuf_quant input,
                            mcuf_quant output, mcuf_fc_layer* layer) {
  TempInput weights(context, node, weights_index);
  TfLiteTensor* w = weights.get();
  if (w == nullptr || (w->type != kTfLiteInt8 && w->type != kTfLiteInt4) ||
      w->dims->size != 2 || w->dims->data[0] < 1 ||
      w->dims->data[1] != input_depth || Elements(w) < 1 ||
      !tflite::IsConstantTensor(w)) {
    MicroPrintf("%s: input %d ('%s' weights) must be a constant int8 or INT4 "
                "[outputs][%d] tensor", op, weights_index, role, input_depth);
    return kTfLiteError;
  }
  const TfLiteAffineQuantization* affine = Affine(w);
  const int outputs = w->dims->data[0];
  if (affine == nullptr ||
      (affine->scale->size != 1 && affine->scale->size != outputs) ||
      !Int8Quant(affine->scale->data[0], affine->zero_point->data[0])) {
    MicroPrintf("%s: input %d ('%s' weights) needs int8 affine quantisation "
                "with 1 or %d scales", op, weights_index, role, outputs);
    return kTfLiteError;
  }
  if (Present(node, bias_index)) {
    TF_LITE_ENSURE_OK(context, CheckInput(context, node, op, bias_index, role,
                                          kTfLiteInt32, outputs, true));
  }
  // fully_connected_common.cc: per channel when the filter has several scales
  // (as TFLM's converter writes per-channel weights).
  const int scales = affine->scale->size;
  bool uniform = true;
  for (int i = 1; i < scales; ++i) {
    uniform = uniform && affine->scale->data[i] == affine->scale->data[0];
  }
  const bool per_channel = scales > 1;
  int32_t one_multiplier = 0, one_shift = 0;
  int32_t* multipliers = &one_multiplier;
  int32_t* shifts = &one_shift;
  int channels = 1;
  if (per_channel && !uniform) {
    channels = outputs;
    multipliers = static_cast<int32_t*>(
        context->AllocatePersistentBuffer(context, 2 * sizeof(int32_t) * outputs));
    if (multipliers == nullptr) return kTfLiteError;
    shifts = multipliers + outputs;
  }
  if (mcuf_prepare_fully_connected(
          input, affine->scale->data, uniform ? 1 : scales,
          affine->zero_point->data[0], per_channel ? 1 : 0, output, channels,
          multipliers, shifts, &layer->params) != MCUF_OK) {
    MicroPrintf("%s: FULLY_CONNECTED '%s': TFLM cannot derive its multipliers "
                "(scales out of range)", op, role);
    return kTfLiteError;
  }
  layer->params.weight_bits = WeightBits(w);
  layer->weights = nullptr;
  layer->bias = nullptr;
  layer->input_depth = input_depth;
  layer->output_depth = outputs;
  return kTfLiteOk;
}

TfLiteStatus PrepareLinear(TfLiteContext* context, TfLiteNode* node,
                           const char* op, const Options& options,
                           const char* name, int down_index, int weights_index,
                           int bias_index, int input_depth, mcuf_quant input,
                           mcuf_linear* linear, int* output_depth) {
  char down_role[32];
  char out_role[32];
  std::snprintf(down_role, sizeof down_role, "%s_down_out", name);
  std::snprintf(out_role, sizeof out_role, "%s_out", name);
  mcuf_quant out;
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, out_role, &out));
  linear->num_layers = 0;
  if (Has(options, down_role)) {
    if (!Present(node, down_index)) {
      MicroPrintf("%s: '%s' is low-rank but input %d ('%s_down_weight') is "
                  "missing", op, name, down_index, name);
      return kTfLiteError;
    }
    mcuf_quant rank;
    TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, down_role, &rank));
    TF_LITE_ENSURE_OK(context, PrepareFcLayer(context, node, op, down_role,
                                              down_index, -1, input_depth,
                                              input, rank, &linear->layers[0]));
    input = rank;
    input_depth = linear->layers[0].output_depth;
    linear->num_layers = 1;
  }
  TF_LITE_ENSURE_OK(context, PrepareFcLayer(context, node, op, out_role,
                                            weights_index, bias_index,
                                            input_depth, input, out,
                                            &linear->layers[linear->num_layers]));
  *output_depth = linear->layers[linear->num_layers].output_depth;
  linear->num_layers += 1;
  return kTfLiteOk;
}

const void* InputData(TfLiteContext* context, TfLiteNode* node, int index) {
  if (!Present(node, index)) return nullptr;
  const TfLiteEvalTensor* tensor = tflite::micro::GetEvalInput(context, node, index);
  return tensor == nullptr ? nullptr : tensor->data.data;
}

void BindLinear(TfLiteContext* context, TfLiteNode* node,
                const LinearInputs& inputs, mcuf_linear* linear) {
  int layer = 0;
  if (linear->num_layers == 2) {
    linear->layers[0].weights =
        static_cast<const int8_t*>(InputData(context, node, inputs.down));
    linear->layers[0].bias = nullptr;
    layer = 1;
  }
  linear->layers[layer].weights =
      static_cast<const int8_t*>(InputData(context, node, inputs.weights));
  linear->layers[layer].bias =
      static_cast<const int32_t*>(InputData(context, node, inputs.bias));
}

namespace {

TfLiteStatus Failed(const char* op, const char* builtin, const char* role) {
  MicroPrintf("%s: %s writing '%s': TFLM cannot derive its multipliers "
              "(scales out of range)", op, builtin, role);
  return kTfLiteError;
}

// The LayerNorm's optional MUL(gamma) or ADD(beta) (`builtin`), present when
// the block has its result `out_role`: constant input `index`
// (`constant_role`, `depth` int8 values) applied to *current, which becomes
// the step's result; *last receives out_role.
template <typename Params>
TfLiteStatus AffineStep(TfLiteContext* context, TfLiteNode* node, const char* op,
                        const Options& options, const char* builtin, int index,
                        const char* constant_role, const char* out_role, int depth,
                        mcuf_status (*prepare)(mcuf_quant, mcuf_quant, mcuf_quant, Params*),
                        Params* params, mcuf_quant* current, const char** last) {
  if (!Has(options, out_role)) return kTfLiteOk;
  mcuf_quant constant, out;
  TF_LITE_ENSURE_OK(context, CheckInput(context, node, op, index, constant_role, kTfLiteInt8,
                                        depth, true));
  TF_LITE_ENSURE_OK(context, InputQuant(context, node, op, index, constant_role, &constant));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, out_role, &out));
  if (prepare(*current, constant, out, params) != MCUF_OK) return Failed(op, builtin, out_role);
  *current = out;
  *last = out_role;
  return kTfLiteOk;
}

}  // namespace

TfLiteStatus PrepareLayerNorm(TfLiteContext* context, TfLiteNode* node,
                              const char* op, const Options& options,
                              mcuf_quant x, int depth, int eps_index,
                              int gamma_index, int beta_index,
                              mcuf_layer_norm* ln, const char** out_role) {
  mcuf_quant mean, centred, squared, variance, variance_eps, rstd, normalized;
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_mean", &mean));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_centered", &centred));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_squared", &squared));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_variance", &variance));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_variance_eps", &variance_eps));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_rstd", &rstd));
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, "ln_normalized", &normalized));
  mcuf_quant eps;
  TF_LITE_ENSURE_OK(context, CheckInput(context, node, op, eps_index, "ln_eps",
                                        kTfLiteInt8, 1, true));
  TF_LITE_ENSURE_OK(context, InputQuant(context, node, op, eps_index, "ln_eps", &eps));
  std::memset(ln, 0, sizeof *ln);
  if (mcuf_prepare_mean(x, mean, &ln->mean) != MCUF_OK) return Failed(op, "MEAN", "ln_mean");
  if (mcuf_prepare_add(x, mean, centred, &ln->centre) != MCUF_OK) {
    return Failed(op, "SUB", "ln_centered");
  }
  if (mcuf_prepare_mul(centred, centred, squared, &ln->square) != MCUF_OK) {
    return Failed(op, "MUL", "ln_squared");
  }
  if (mcuf_prepare_mean(squared, variance, &ln->variance) != MCUF_OK) {
    return Failed(op, "MEAN", "ln_variance");
  }
  // ADD and MUL are prepared in (token stream, constant) order: their
  // multipliers do not depend on the operand order but for that swap.
  if (mcuf_prepare_add(variance, eps, variance_eps, &ln->add_epsilon) != MCUF_OK) {
    return Failed(op, "ADD", "ln_variance_eps");
  }
  if (mcuf_prepare_rsqrt(variance_eps, rstd, &ln->rsqrt) != MCUF_OK) {
    return Failed(op, "RSQRT", "ln_rstd");
  }
  if (mcuf_prepare_mul(centred, rstd, normalized, &ln->normalize) != MCUF_OK) {
    return Failed(op, "MUL", "ln_normalized");
  }
  const char* last = "ln_normalized";
  mcuf_quant current = normalized;
  TF_LITE_ENSURE_OK(context, AffineStep(context, node, op, options, "MUL", gamma_index, "ln_gamma",
                                        "ln_scaled", depth, mcuf_prepare_mul, &ln->scale,
                                        &current, &last));
  TF_LITE_ENSURE_OK(context, AffineStep(context, node, op, options, "ADD", beta_index, "ln_beta",
                                        "ln_out", depth, mcuf_prepare_add, &ln->offset, &current,
                                        &last));
  *out_role = last;
  return kTfLiteOk;
}

void BindLayerNorm(TfLiteContext* context, TfLiteNode* node, int eps_index,
                   int gamma_index, int beta_index, mcuf_layer_norm* ln) {
  ln->epsilon = static_cast<const int8_t*>(InputData(context, node, eps_index));
  ln->gamma = gamma_index < 0 ? nullptr
                              : static_cast<const int8_t*>(InputData(context, node, gamma_index));
  ln->beta = beta_index < 0 ? nullptr
                            : static_cast<const int8_t*>(InputData(context, node, beta_index));
}

TfLiteStatus CheckArity(const TfLiteNode* node, const char* op, int inputs) {
  if (node->inputs->size == inputs && node->outputs->size == 1) return kTfLiteOk;
  MicroPrintf("%s: %d inputs and %d outputs, %d and 1 expected", op, node->inputs->size,
              node->outputs->size, inputs);
  return kTfLiteError;
}

TfLiteStatus PrepareTokenBlock(TfLiteContext* context, TfLiteNode* node,
                               const char* op, const Options& options,
                               const LayerNormInputs& inputs,
                               mcuf_layer_norm* ln, TokenBlock* block) {
  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TempInput input(context, node, 0);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  TF_LITE_ENSURE(context, input.get() != nullptr && output != nullptr);
  const TfLiteTensor* x = input.get();
  const int64_t elements = Elements(x);
  const bool shapes_ok = x->type == kTfLiteInt8 && output->type == kTfLiteInt8 &&
                         x->dims->size >= 1 && x->bytes == output->bytes &&
                         elements >= 1 && x->bytes == static_cast<size_t>(elements);
  block->depth = x->dims->size >= 1 ? x->dims->data[x->dims->size - 1] : 0;
  block->tokens = shapes_ok && block->depth > 0
                      ? static_cast<int>(elements / block->depth) : 0;
  const TfLiteAffineQuantization* out_affine = Affine(output);
  if (out_affine != nullptr &&
      !Int8Quant(out_affine->scale->data[0], out_affine->zero_point->data[0])) {
    out_affine = nullptr;
  }
  if (out_affine != nullptr) {
    block->y = {out_affine->scale->data[0], out_affine->zero_point->data[0]};
  }
  micro_context->DeallocateTempTfLiteTensor(output);
  if (!shapes_ok || block->depth < 1 || block->tokens < 1) {
    MicroPrintf("%s: input 0 ('input') and output 0 ('output') must be int8 "
                "tokens [..., D] of the same size", op);
    return kTfLiteError;
  }
  if (out_affine == nullptr) {
    MicroPrintf("%s: output 0 ('output') has no int8 affine quantisation", op);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_OK(context, InputQuant(context, node, op, 0, "input", &block->x));
  const char* ln_out = nullptr;
  TF_LITE_ENSURE_OK(context, PrepareLayerNorm(context, node, op, options, block->x,
                                              block->depth, inputs.eps, inputs.gamma,
                                              inputs.beta, ln, &ln_out));
  block->gamma_index = Has(options, "ln_scaled") ? inputs.gamma : -1;
  block->beta_index = Has(options, "ln_out") ? inputs.beta : -1;
  return RoleQuant(context, options, op, ln_out, &block->normalized);
}

TfLiteStatus PrepareBranchOut(TfLiteContext* context, TfLiteNode* node,
                              const char* op, const Options& options,
                              const char* name, const LinearInputs& inputs,
                              int input_depth, mcuf_quant input,
                              const TokenBlock& block, mcuf_linear* linear,
                              mcuf_add_params* residual) {
  char branch_role[32];
  std::snprintf(branch_role, sizeof branch_role, "%s_out", name);
  int width = 0;
  TF_LITE_ENSURE_OK(context, PrepareLinear(context, node, op, options, name, inputs.down,
                                           inputs.weights, inputs.bias, input_depth, input,
                                           linear, &width));
  if (width != block.depth) {
    MicroPrintf("%s: '%s' has %d channels, the tokens %d", op, branch_role, width, block.depth);
    return kTfLiteError;
  }
  mcuf_quant branch;
  TF_LITE_ENSURE_OK(context, RoleQuant(context, options, op, branch_role, &branch));
  if (mcuf_prepare_add(block.x, branch, block.y, residual) != MCUF_OK) {
    return Failed(op, "ADD", "output");
  }
  return kTfLiteOk;
}

int8_t* TokensInPlace(TfLiteContext* context, TfLiteNode* node, size_t* bytes) {
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, 0);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const int8_t* x = tflite::micro::GetTensorData<int8_t>(input);
  int8_t* tokens = tflite::micro::GetTensorData<int8_t>(output);
  *bytes = tflite::EvalTensorBytes(input);
  if (tokens != x) std::memmove(tokens, x, *bytes);
  return tokens;
}

TfLiteStatus EvalStatus(int status, const char* op, const char* failure) {
  if (status == MCUF_OK) return kTfLiteOk;
  MicroPrintf("%s: %s", op, failure);
  return kTfLiteError;
}

TfLiteStatus CheckedParams(mcuf_status status, const mcuf_param_error& error,
                           const char* op) {
  if (status == MCUF_OK) return kTfLiteOk;
  MicroPrintf("%s: parameter %s%s%s outside the kernel's range (mcuf/params_check.h)", op,
              error.member == nullptr ? "" : error.member, error.member == nullptr ? "" : ": ",
              error.field == nullptr ? "?" : error.field);
  return kTfLiteError;
}

int8_t* Scratch(TfLiteContext* context, int index) {
  return static_cast<int8_t*>(context->GetScratchBuffer(context, index));
}

}  // namespace mcuf_glue
