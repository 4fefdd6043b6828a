// MCUF_ATTENTION: TFLM glue of mcuf_attention (mcuf/attention.h).
//
// Operator inputs (mcuformer_tf/compiler/subgraphs.py FUSED["attention"]):
// the tokens, then ln_eps, ln_gamma?, ln_beta?, qkv_down_weight?,
// qkv_weight, qkv_bias?, proj_down_weight?, proj_weight, proj_bias? (-1
// where absent); one output, the tokens, which the offline plan puts on the
// input's memory. The heads and head size are the options' "dims"; every
// multiplier of the replaced builtins is derived through mcuf/prepare.h as
// their TFLM kernels' Prepare would; one scratch buffer of
// mcuf_attention_get_buffer_size bytes (K, V and one query row's working set).

#include "mcuf/attention.h"
#include "mcuf_glue.h"
#include "mcuf_ops.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace {

constexpr const char* kOp = "MCUF_ATTENTION";
enum Input {
  kTokens, kEps, kGamma, kBeta, kQkvDown, kQkvWeight, kQkvBias, kProjDown,
  kProjWeight, kProjBias, kInputCount
};
// The converter's SOFTMAX beta, which match proved (subgraphs.STEPS).
constexpr float kSoftmaxBeta = 1.0f;

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  mcuf_glue::TokenOpStart<mcuf_attention_params> start;
  TF_LITE_ENSURE_OK(context, mcuf_glue::StartTokenOp(context, node, kOp, kInputCount,
                                                     {kEps, kGamma, kBeta}, &start));
  mcuf_attention_params* p = start.params;
  const flexbuffers::Reference dims = start.options.root["dims"];
  if (!dims.IsMap()) {
    MicroPrintf("%s: custom options lack the 'dims' map", kOp);
    return kTfLiteError;
  }
  const flexbuffers::Reference heads_value = dims.AsMap()["heads"];
  const flexbuffers::Reference head_dim_value = dims.AsMap()["head_dim"];
  const int64_t heads64 = heads_value.AsInt64();
  const int64_t head_dim64 = head_dim_value.AsInt64();
  // 3 heads head_dim is qkv's width: it must fit an int32 (each factor is
  // bounded first, so their product cannot overflow).
  constexpr int64_t kMaxWidth = INT32_MAX / 3;
  if (!heads_value.IsInt() || !head_dim_value.IsInt() || heads64 < 1 || head_dim64 < 1 ||
      heads64 > kMaxWidth || head_dim64 > kMaxWidth || heads64 * head_dim64 > kMaxWidth) {
    MicroPrintf("%s: the 'dims' map needs integer heads and head_dim of at least 1, "
                "3 heads x head_dim within int32", kOp);
    return kTfLiteError;
  }
  const int heads = static_cast<int>(heads64);
  const int head_dim = static_cast<int>(head_dim64);
  p->tokens = start.block.tokens;
  p->heads = heads;
  p->head_dim = head_dim;
  int width = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, start.options, "qkv",
                                                      kQkvDown, kQkvWeight, kQkvBias, start.block.depth,
                                                      start.block.normalized, &p->qkv, &width));
  if (width != 3 * heads * head_dim) {
    MicroPrintf("%s: 'qkv_out' has %d channels, 3 x %d heads x %d expected", kOp, width, heads,
                head_dim);
    return kTfLiteError;
  }
  // q, k, v: the UNPACK's outputs, which the BATCH_MATMULs read.
  mcuf_quant q, k, v, scores, probs, context_quant, context_read;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "q", &q));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "k", &k));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "v", &v));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "scores", &scores));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "probs", &probs));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp, "context", &context_quant));
  static const char* const kContextRoles[] = {"context_flat", "context_tokens", "context", nullptr};
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, start.options, kOp,
                                                  mcuf_glue::FirstRole(start.options, kContextRoles),
                                                  &context_read));
  if (mcuf_prepare_batch_matmul(q, k, scores, 1, &p->scores) != MCUF_OK) {
    MicroPrintf("%s: BATCH_MATMUL writing 'scores': TFLM cannot derive its multiplier", kOp);
    return kTfLiteError;
  }
  if (mcuf_prepare_softmax(kSoftmaxBeta, scores, probs, &p->softmax) != MCUF_OK) {
    MicroPrintf("%s: SOFTMAX writing 'probs': TFLM needs an output of scale 1/256 and zero "
                "point -128 and a representable input scale", kOp);
    return kTfLiteError;
  }
  if (mcuf_prepare_batch_matmul(probs, v, context_quant, 0, &p->context) != MCUF_OK) {
    MicroPrintf("%s: BATCH_MATMUL writing 'context': TFLM cannot derive its multiplier", kOp);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareBranchOut(
                                 context, node, kOp, start.options, "proj",
                                 {kProjDown, kProjWeight, kProjBias}, heads * head_dim,
                                 context_read, start.block, &p->proj, &p->residual));
  return mcuf_glue::RequestTokenScratch(context, &start, kOp, mcuf_attention_check_params,
                                        mcuf_attention_get_buffer_size);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const auto run = mcuf_glue::BindTokenOp<mcuf_attention_params>(context, node, kEps);
  mcuf_glue::BindLinear(context, node, {kQkvDown, kQkvWeight, kQkvBias}, &run.params->qkv);
  mcuf_glue::BindLinear(context, node, {kProjDown, kProjWeight, kProjBias}, &run.params->proj);
  return mcuf_glue::EvalStatus(
      mcuf_attention(run.params, run.tokens, run.scratch), kOp,
      "TFLM's Eval fails here too: a LayerNorm variance ('ln_variance_eps') below RSQRT's "
      "domain or a softmax ('probs') row whose sum reaches 512");
}

}  // namespace

const TFLMRegistration* Register_MCUF_ATTENTION() {
  return mcuf_glue::Registration<mcuf_glue::TokenOpData<mcuf_attention_params>, Prepare, Eval>();
}
