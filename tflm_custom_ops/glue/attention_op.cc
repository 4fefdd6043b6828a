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
#include "tensorflow/lite/micro/micro_utils.h"

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

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

TfLiteStatus OutputQuant(TfLiteContext* context, TfLiteNode* node, mcuf_quant* quant) {
  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* out = micro_context->AllocateTempOutputTensor(node, 0);
  if (out == nullptr) return kTfLiteError;
  const auto* affine = static_cast<const TfLiteAffineQuantization*>(out->quantization.params);
  const bool ok = out->quantization.type == kTfLiteAffineQuantization && affine != nullptr &&
                  affine->scale->size >= 1;
  if (ok) *quant = {affine->scale->data[0], affine->zero_point->data[0]};
  micro_context->DeallocateTempTfLiteTensor(out);
  if (!ok) {
    MicroPrintf("%s: output 0 ('output') has no affine quantisation", kOp);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_attention_params* p = &data->params;
  if (node->inputs->size != kInputCount || node->outputs->size != 1) {
    MicroPrintf("%s: %d inputs and %d outputs, %d and 1 expected", kOp,
                node->inputs->size, node->outputs->size, kInputCount);
    return kTfLiteError;
  }
  mcuf_glue::Options options;
  TF_LITE_ENSURE_OK(context, mcuf_glue::ReadOptions(context, node, kOp, &options));
  const flexbuffers::Reference dims = options.root["dims"];
  if (!dims.IsMap()) {
    MicroPrintf("%s: custom options lack the 'dims' map", kOp);
    return kTfLiteError;
  }
  const int heads = dims.AsMap()["heads"].AsInt32();
  const int head_dim = dims.AsMap()["head_dim"].AsInt32();

  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, kTokens);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  TF_LITE_ENSURE(context, input != nullptr && output != nullptr);
  const bool types_ok = input->type == kTfLiteInt8 && output->type == kTfLiteInt8 &&
                        input->dims->size >= 1 && input->bytes == output->bytes;
  const int depth = input->dims->size >= 1 ? input->dims->data[input->dims->size - 1] : 0;
  const int tokens = depth > 0 ? static_cast<int>(input->bytes) / depth : 0;
  micro_context->DeallocateTempTfLiteTensor(input);
  micro_context->DeallocateTempTfLiteTensor(output);
  if (!types_ok || depth < 1 || tokens < 1 || heads < 1 || head_dim < 1) {
    MicroPrintf("%s: input 0 ('input') and output 0 ('output') must be int8 "
                "tokens [..., D] of the same size, with dims heads and head_dim", kOp);
    return kTfLiteError;
  }
  mcuf_quant x, y;
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kTokens, "input", &x));
  TF_LITE_ENSURE_OK(context, OutputQuant(context, node, &y));

  std::memset(p, 0, sizeof *p);
  p->tokens = tokens;
  p->depth = depth;
  p->heads = heads;
  p->head_dim = head_dim;
  const char* ln_out = nullptr;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLayerNorm(context, node, kOp, options, x, depth,
                                                         kEps, kGamma, kBeta, &p->ln, &ln_out));
  data->gamma_index = mcuf_glue::Has(options, "ln_scaled") ? kGamma : -1;
  data->beta_index = mcuf_glue::Has(options, "ln_out") ? kBeta : -1;
  mcuf_quant normalized;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, ln_out, &normalized));
  int width = 0;
  TF_LITE_ENSURE_OK(context, mcuf_glue::PrepareLinear(context, node, kOp, options, "qkv",
                                                      kQkvDown, kQkvWeight, kQkvBias, depth,
                                                      normalized, &p->qkv, &width));
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
  if (width != depth) {
    MicroPrintf("%s: 'proj_out' has %d channels, the tokens %d", kOp, width, depth);
    return kTfLiteError;
  }
  mcuf_quant branch;
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "proj_out", &branch));
  if (mcuf_prepare_add(x, branch, y, &p->residual) != MCUF_OK) {
    MicroPrintf("%s: ADD writing 'output': TFLM cannot derive its multipliers", kOp);
    return kTfLiteError;
  }
  return context->RequestScratchBufferInArena(context, mcuf_attention_get_buffer_size(p),
                                              &data->scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_attention_params* p = &data->params;
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, kTokens);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  mcuf_glue::BindLayerNorm(context, node, kEps, data->gamma_index, data->beta_index, &p->ln);
  mcuf_glue::BindLinear(context, node, {kQkvDown, kQkvWeight, kQkvBias}, &p->qkv);
  mcuf_glue::BindLinear(context, node, {kProjDown, kProjWeight, kProjBias}, &p->proj);
  const int8_t* x = tflite::micro::GetTensorData<int8_t>(input);
  int8_t* tokens = tflite::micro::GetTensorData<int8_t>(output);
  // The offline plan puts the output on the input (in place); otherwise the
  // kernel runs in place on a copy.
  if (tokens != x) std::memmove(tokens, x, tflite::EvalTensorBytes(input));
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
  static TFLMRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}
