// MCUF_MLP: TFLM glue of mcuf_mlp (mcuf/mlp.h).
//
// Operator inputs (mcuformer_tf/compiler/subgraphs.py FUSED["mlp"]): the
// tokens, then ln_eps, ln_gamma?, ln_beta?, fc1_down_weight?, fc1_weight,
// fc1_bias?, gelu_scale, fc2_down_weight?, fc2_weight, fc2_bias? (-1 where
// absent); one output, the tokens, which the offline plan puts on the
// input's memory. Prepare derives every multiplier of the replaced builtins
// through mcuf/prepare.h, as their TFLM kernels' Prepare would, and requests
// the kernel's one scratch buffer; Eval runs the kernel in place.

#include "mcuf/mlp.h"
#include "mcuf_glue.h"
#include "mcuf_ops.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace {

constexpr const char* kOp = "MCUF_MLP";
enum Input {
  kTokens, kEps, kGamma, kBeta, kFc1Down, kFc1Weight, kFc1Bias, kGeluScale,
  kFc2Down, kFc2Weight, kFc2Bias, kInputCount
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  mcuf_glue::TokenOpStart<mcuf_mlp_params> start;
  TF_LITE_ENSURE_OK(context, mcuf_glue::StartTokenOp(context, node, kOp, kInputCount,
                                                     {kEps, kGamma, kBeta}, &start));
  mcuf_mlp_params* p = start.params;
  int hidden = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, start.options, "fc1",
                                                      kFc1Down, kFc1Weight, kFc1Bias, start.block.depth,
                                                      start.block.normalized, &p->fc1, &hidden));
  p->hidden = hidden;

  // QuickGELU: MUL(h, coefficient), LOGISTIC, MUL(h, sigmoid); h is fc1's
  // output as the MULs read it (after a token RESHAPE where there is one).
  static const char* const kFc1Roles[] = {"fc1_tokens", "fc1_out", nullptr};
  static const char* const kScaledRoles[] = {"gelu_scaled_tokens", "gelu_scaled", nullptr};
  static const char* const kSigmoidRoles[] = {"gelu_sigmoid_tokens", "gelu_sigmoid", nullptr};
  mcuf_quant h, coefficient, scaled, scaled_read, sigmoid, sigmoid_read, gated;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp,
                                                  mcuf_glue::FirstRole(start.options, kFc1Roles), &h));
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckInput(context, node, kOp, kGeluScale, "gelu_scale",
                                                   kTfLiteInt8, 1, true));
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kGeluScale, "gelu_scale",
                                                   &coefficient));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "gelu_scaled", &scaled));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp,
                                                  mcuf_glue::FirstRole(start.options, kScaledRoles),
                                                  &scaled_read));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "gelu_sigmoid", &sigmoid));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp,
                                                  mcuf_glue::FirstRole(start.options, kSigmoidRoles),
                                                  &sigmoid_read));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "gelu_out", &gated));
  if (mcuf_prepare_mul(h, coefficient, scaled, &p->gelu_scale) != MCUF_OK ||
      mcuf_prepare_logistic(scaled_read, sigmoid, &p->gelu_sigmoid) != MCUF_OK ||
      mcuf_prepare_mul(h, sigmoid_read, gated, &p->gelu_gate) != MCUF_OK) {
    MicroPrintf("%s: QuickGELU ('gelu_scaled', 'gelu_sigmoid', 'gelu_out'): TFLM "
                "cannot derive its multipliers (LOGISTIC needs zero point -128)", kOp);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareBranchOut(
                                 context, node, kOp, start.options, "fc2",
                                 {kFc2Down, kFc2Weight, kFc2Bias}, hidden, gated, start.block,
                                 &p->fc2, &p->residual));
  return mcuf_glue::RequestTokenScratch(context, &start, kOp, mcuf_mlp_check_params,
                                        mcuf_mlp_get_buffer_size);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const auto run = mcuf_glue::BindTokenOp<mcuf_mlp_params>(context, node, kEps);
  mcuf_mlp_params* p = run.params;
  p->gelu_coefficient = static_cast<const int8_t*>(mcuf_glue::InputData(context, node, kGeluScale));
  mcuf_glue::BindLinear(context, node, {kFc1Down, kFc1Weight, kFc1Bias}, &p->fc1);
  mcuf_glue::BindLinear(context, node, {kFc2Down, kFc2Weight, kFc2Bias}, &p->fc2);
  const int32_t n_tokens = static_cast<int32_t>(run.bytes / static_cast<size_t>(p->depth));
  return mcuf_glue::EvalStatus(
      mcuf_mlp(p, run.tokens, n_tokens, run.scratch), kOp,
      "a token's LayerNorm variance ('ln_variance_eps') is below RSQRT's input zero point "
      "(Rsqrt is only defined for positive values)");
}

}  // namespace

const TFLMRegistration* Register_MCUF_MLP() {
  return mcuf_glue::Registration<mcuf_glue::TokenOpData<mcuf_mlp_params>, Prepare, Eval>();
}
