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
#include <cstring>

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

struct OpData {
  mcuf_attention_params params;
  int gamma_index;  // -1 without MUL(gamma)
  int beta_index;   // -1 without ADD(beta)
  int scratch_index;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_attention_params* p = &data->params;
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckArity(node, kOp, kInputCount));
  mcuf_glue::Options options;
  TF_LITE_ENSURE_OK(context, mcuf_glue::ReadOptions(context, node, kOp, &options));
  const flexbuffers::Reference dims = options.root["dims"];
  if (!dims.IsMap()) {
    MicroPrintf("%s: custom options lack the 'dims' map", kOp);
    return kTfLiteError;
  }
  const int heads = dims.AsMap()["heads"].AsInt32();
  const int head_dim = dims.AsMap()["head_dim"].AsInt32();
  if (heads < 1 || head_dim < 1) {
    MicroPrintf("%s: the 'dims' map needs heads and head_dim of at least 1", kOp);
    return kTfLiteError;
  }
  std::memset(p, 0, sizeof *p);
  mcuf_glue::TokenBlock block;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareTokenBlock(context, node, kOp, options,
                                                          {kEps, kGamma, kBeta}, &p->ln, &block));
  p->tokens = block.tokens;
  p->depth = block.depth;
  p->heads = heads;
  p->head_dim = head_dim;
  data->gamma_index = block.gamma_index;
  data->beta_index = block.beta_index;
  int width = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, options, "qkv",
                                                      kQkvDown, kQkvWeight, kQkvBias, block.depth,
                                                      block.normalized, &p->qkv, &width));
  if (width != 3 * heads * head_dim) {
    MicroPrintf("%s: 'qkv_out' has %d channels, 3 x %d heads x %d expected", kOp, width, heads,
                head_dim);
    return kTfLiteError;
  }
  // q, k, v: the UNPACK's outputs, which the BATCH_MATMULs read.
  mcuf_quant q, k, v, scores, probs, context_quant, context_read;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "q", &q));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "k", &k));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "v", &v));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "scores", &scores));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "probs", &probs));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "context", &context_quant));
  static const char* const kContextRoles[] = {"context_flat", "context_tokens", "context", nullptr};
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp,
                                                  mcuf_glue::FirstRole(options, kContextRoles),
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
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, options, "proj",
                                                      kProjDown, kProjWeight, kProjBias,
                                                      heads * head_dim, context_read, &p->proj,
                                                      &width));
  if (width != block.depth) {
    MicroPrintf("%s: 'proj_out' has %d channels, the tokens %d", kOp, width, block.depth);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareResidual(context, options, kOp, "proj_out", block,
                                                        &p->residual));
  return context->RequestScratchBufferInArena(context, mcuf_attention_get_buffer_size(p),
                                              &data->scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_attention_params* p = &data->params;
  mcuf_glue::BindLayerNorm(context, node, kEps, data->gamma_index, data->beta_index, &p->ln);
  mcuf_glue::BindLinear(context, node, {kQkvDown, kQkvWeight, kQkvBias}, &p->qkv);
  mcuf_glue::BindLinear(context, node, {kProjDown, kProjWeight, kProjBias}, &p->proj);
  size_t bytes = 0;
  int8_t* tokens = mcuf_glue::TokensInPlace(context, node, &bytes);
  int8_t* scratch = static_cast<int8_t*>(context->GetScratchBuffer(context, data->scratch_index));
  if (mcuf_attention(p, tokens, scratch) != MCUF_OK) {
    MicroPrintf("%s: TFLM's Eval fails here too: a LayerNorm variance ('ln_variance_eps') "
                "below RSQRT's domain or a softmax ('probs') row whose sum reaches 512", kOp);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

const TFLMRegistration* Register_MCUF_ATTENTION() {
  static TFLMRegistration registration = tflite::micro::RegisterOp(mcuf_glue::InitOpData<OpData>, Prepare, Eval);
  return &registration;
}
