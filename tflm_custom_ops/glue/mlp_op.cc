// MCUF_MLP: TFLM glue of mcuf_mlp (mcuf/mlp.h).
//
// Operator inputs (mcuformer_tf/compiler/subgraphs.py FUSED["mlp"]): the
// tokens, then ln_eps, ln_gamma?, ln_beta?, fc1_down_weight?, fc1_weight,
// fc1_bias?, gelu_scale, fc2_down_weight?, fc2_weight, fc2_bias? (-1 where
// absent); one output, the tokens, which the offline plan puts on the
// input's memory. Prepare derives every multiplier of the replaced builtins
// through mcuf/prepare.h, as their TFLM kernels' Prepare would, and requests
// the kernel's one scratch buffer; Eval runs the kernel in place.
#include <cstring>

#include "mcuf/mlp.h"
#include "mcuf_glue.h"
#include "mcuf_ops.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_utils.h"

namespace {

constexpr const char* kOp = "MCUF_MLP";
enum Input {
  kTokens, kEps, kGamma, kBeta, kFc1Down, kFc1Weight, kFc1Bias, kGeluScale,
  kFc2Down, kFc2Weight, kFc2Bias, kInputCount
};

struct OpData {
  mcuf_mlp_params params;
  int gamma_index;  // -1 without MUL(gamma)
  int beta_index;   // -1 without ADD(beta)
  int scratch_index;
};

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_mlp_params* p = &data->params;
  if (node->inputs->size != kInputCount || node->outputs->size != 1) {
    MicroPrintf("%s: %d inputs and %d outputs, %d and 1 expected", kOp,
                node->inputs->size, node->outputs->size, kInputCount);
    return kTfLiteError;
  }
  mcuf_glue::Options options;
  TF_LITE_ENSURE_OK(context, mcuf_glue::ReadOptions(context, node, kOp, &options));

  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, kTokens);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  TF_LITE_ENSURE(context, input != nullptr && output != nullptr);
  const bool shapes_ok = input->type == kTfLiteInt8 && output->type == kTfLiteInt8 &&
                         input->dims->size >= 1 && input->bytes == output->bytes;
  const int depth = input->dims->size >= 1 ? input->dims->data[input->dims->size - 1] : 0;
  micro_context->DeallocateTempTfLiteTensor(input);
  micro_context->DeallocateTempTfLiteTensor(output);
  if (!shapes_ok || depth < 1) {
    MicroPrintf("%s: input 0 ('input') and output 0 ('output') must be int8 "
                "tokens [..., D] of the same size", kOp);
    return kTfLiteError;
  }
  mcuf_quant x, y;
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kTokens, "input", &x));
  {
    TfLiteTensor* out = micro_context->AllocateTempOutputTensor(node, 0);
    const auto* affine = static_cast<const TfLiteAffineQuantization*>(out->quantization.params);
    const bool ok = out->quantization.type == kTfLiteAffineQuantization && affine != nullptr &&
                    affine->scale->size >= 1;
    if (ok) y = {affine->scale->data[0], affine->zero_point->data[0]};
    micro_context->DeallocateTempTfLiteTensor(out);
    if (!ok) {
      MicroPrintf("%s: output 0 ('output') has no affine quantisation", kOp);
      return kTfLiteError;
    }
  }

  std::memset(p, 0, sizeof *p);
  p->depth = depth;
  const char* ln_out = nullptr;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLayerNorm(context, node, kOp, options, x, depth,
                                                         kEps, kGamma, kBeta, &p->ln, &ln_out));
  data->gamma_index = mcuf_glue::Has(options, "ln_scaled") ? kGamma : -1;
  data->beta_index = mcuf_glue::Has(options, "ln_out") ? kBeta : -1;
  mcuf_quant normalized;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, ln_out, &normalized));
  int hidden = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, options, "fc1",
                                                      kFc1Down, kFc1Weight, kFc1Bias, depth,
                                                      normalized, &p->fc1, &hidden));
  p->hidden = hidden;

  // QuickGELU: MUL(h, coefficient), LOGISTIC, MUL(h, sigmoid); h is fc1's
  // output as the MULs read it (after a token RESHAPE where there is one).
  static const char* const kFc1Roles[] = {"fc1_tokens", "fc1_out", nullptr};
  static const char* const kScaledRoles[] = {"gelu_scaled_tokens", "gelu_scaled", nullptr};
  static const char* const kSigmoidRoles[] = {"gelu_sigmoid_tokens", "gelu_sigmoid", nullptr};
  mcuf_quant h, coefficient, scaled, scaled_read, sigmoid, sigmoid_read, gated;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp,
                                                  mcuf_glue::FirstRole(options, kFc1Roles), &h));
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckInput(context, node, kOp, kGeluScale, "gelu_scale",
                                                   kTfLiteInt8, 1, true));
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kGeluScale, "gelu_scale",
                                                   &coefficient));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "gelu_scaled", &scaled));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp,
                                                  mcuf_glue::FirstRole(options, kScaledRoles),
                                                  &scaled_read));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "gelu_sigmoid", &sigmoid));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp,
                                                  mcuf_glue::FirstRole(options, kSigmoidRoles),
                                                  &sigmoid_read));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "gelu_out", &gated));
  if (mcuf_prepare_mul(h, coefficient, scaled, &p->gelu_scale) != MCUF_OK ||
      mcuf_prepare_logistic(scaled_read, sigmoid, &p->gelu_sigmoid) != MCUF_OK ||
      mcuf_prepare_mul(h, sigmoid_read, gated, &p->gelu_gate) != MCUF_OK) {
    MicroPrintf("%s: QuickGELU ('gelu_scaled', 'gelu_sigmoid', 'gelu_out'): TFLM "
                "cannot derive its multipliers (LOGISTIC needs zero point -128)", kOp);
    return kTfLiteError;
  }
  int width = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, options, "fc2",
                                                      kFc2Down, kFc2Weight, kFc2Bias, hidden,
                                                      gated, &p->fc2, &width));
  if (width != depth) {
    MicroPrintf("%s: 'fc2_out' has %d channels, the tokens %d", kOp, width, depth);
    return kTfLiteError;
  }
  mcuf_quant branch;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "fc2_out", &branch));
  if (mcuf_prepare_add(x, branch, y, &p->residual) != MCUF_OK) {
    MicroPrintf("%s: ADD writing 'output': TFLM cannot derive its multipliers", kOp);
    return kTfLiteError;
  }
  return context->RequestScratchBufferInArena(context, mcuf_mlp_get_buffer_size(p),
                                              &data->scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_mlp_params* p = &data->params;
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, kTokens);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  mcuf_glue::BindLayerNorm(context, node, kEps, data->gamma_index, data->beta_index, &p->ln);
  mcuf_glue::BindLinear(context, node, {kFc1Down, kFc1Weight, kFc1Bias}, &p->fc1);
  mcuf_glue::BindLinear(context, node, {kFc2Down, kFc2Weight, kFc2Bias}, &p->fc2);
  p->gelu_coefficient = static_cast<const int8_t*>(mcuf_glue::InputData(context, node, kGeluScale));
  const int8_t* x = tflite::micro::GetTensorData<int8_t>(input);
  int8_t* tokens = tflite::micro::GetTensorData<int8_t>(output);
  const size_t bytes = tflite::EvalTensorBytes(input);
  // The offline plan puts the output on the input (in place); otherwise the
  // kernel runs in place on a copy.
  if (tokens != x) std::memmove(tokens, x, bytes);
  int8_t* scratch = static_cast<int8_t*>(context->GetScratchBuffer(context, data->scratch_index));
  const int32_t n_tokens = static_cast<int32_t>(bytes / static_cast<size_t>(p->depth));
  if (mcuf_mlp(p, tokens, n_tokens, scratch) != MCUF_OK) {
    MicroPrintf("%s: a token's LayerNorm variance ('ln_variance_eps') is below "
                "RSQRT's input zero point (Rsqrt is only defined for positive values)", kOp);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

const TFLMRegistration* Register_MCUF_MLP() {
  static TFLMRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}
