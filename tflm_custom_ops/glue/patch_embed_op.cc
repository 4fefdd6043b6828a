// MCUF_PATCH_EMBED: TFLM glue of mcuf_patch_embed (mcuf/patch_embed.h).
//
// Operator inputs (mcuformer_tf/compiler/subgraphs.py FUSED["patch_embed"]):
// the image [1, H, W, C], conv_weight [D, P, P, C] (int8 or packed INT4),
// conv_bias? [D] (-1 where absent), pos [N, D]; one output, the tokens, which the offline plan may put
// on the image's memory (at most mcuf_patch_embed_output_offset from it).
// CONV_2D's multipliers are derived per channel, as TFLM's int8 conv always
// does (conv_common.cc CalculateOpDataConv, PopulateConvolutionQuantization-
// Params), the position ADD's as add_common.cc does, through mcuf/prepare.h;
// one scratch buffer of one patch row of tokens.
#include <cstring>

#include "mcuf/patch_embed.h"
#include "mcuf_glue.h"
#include "mcuf_ops.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace {

constexpr const char* kOp = "MCUF_PATCH_EMBED";
enum Input { kImage, kWeights, kBias, kPosition, kInputCount };

struct OpData {
  mcuf_patch_embed_params params;
  int scratch_index;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_patch_embed_params* p = &data->params;
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckArity(node, kOp, kInputCount));
  mcuf_glue::Options options;
  TF_LITE_ENSURE_OK(context, mcuf_glue::ReadOptions(context, node, kOp, &options));
  std::memset(p, 0, sizeof *p);

  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* image = micro_context->AllocateTempInputTensor(node, kImage);
  TfLiteTensor* weights = micro_context->AllocateTempInputTensor(node, kWeights);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  TF_LITE_ENSURE(context, image != nullptr && weights != nullptr && output != nullptr);
  const bool image_ok = image->type == kTfLiteInt8 && image->dims->size == 4 &&
                        image->dims->data[0] == 1 && mcuf_glue::Elements(image) >= 1;
  const bool weights_ok = (weights->type == kTfLiteInt8 || weights->type == kTfLiteInt4) &&
                          weights->dims->size == 4 &&
                          weights->dims->data[1] == weights->dims->data[2] &&
                          mcuf_glue::Elements(weights) >= 1 &&
                          tflite::IsConstantTensor(weights);
  if (image_ok && weights_ok) {
    p->image_height = image->dims->data[1];
    p->image_width = image->dims->data[2];
    p->channels = image->dims->data[3];
    p->depth = weights->dims->data[0];
    p->patch = weights->dims->data[1];
  }
  const bool channels_ok = weights_ok && image_ok && weights->dims->data[3] == p->channels;
  const TfLiteAffineQuantization* affine = mcuf_glue::Affine(weights);
  const TfLiteAffineQuantization* out_affine = mcuf_glue::Affine(output);
  const bool output_ok = output->type == kTfLiteInt8 && out_affine != nullptr &&
                         mcuf_glue::Int8Quant(out_affine->scale->data[0],
                                              out_affine->zero_point->data[0]);
  const mcuf_quant y = output_ok ? mcuf_quant{out_affine->scale->data[0],
                                              out_affine->zero_point->data[0]}
                                 : mcuf_quant{0.0f, 0};
  const size_t output_bytes = output->bytes;
  micro_context->DeallocateTempTfLiteTensor(output);
  micro_context->DeallocateTempTfLiteTensor(image);
  if (!image_ok) {
    MicroPrintf("%s: input 0 ('input') must be an int8 image [1, H, W, C]", kOp);
    micro_context->DeallocateTempTfLiteTensor(weights);
    return kTfLiteError;
  }
  if (!channels_ok || affine == nullptr ||
      !mcuf_glue::Int8Quant(affine->scale->data[0], affine->zero_point->data[0])) {
    MicroPrintf("%s: input 1 ('conv_weight') must be constant int8 or INT4 [D, P, P, %d] with "
                "int8 affine quantisation", kOp, static_cast<int>(p->channels));
    micro_context->DeallocateTempTfLiteTensor(weights);
    return kTfLiteError;
  }
  if (p->patch < 1 || p->image_height % p->patch != 0 || p->image_width % p->patch != 0) {
    MicroPrintf("%s: image %dx%d is not a whole number of %dx%d patches ('conv_weight')", kOp,
                static_cast<int>(p->image_height), static_cast<int>(p->image_width),
                static_cast<int>(p->patch), static_cast<int>(p->patch));
    micro_context->DeallocateTempTfLiteTensor(weights);
    return kTfLiteError;
  }
  const int64_t tokens64 =
      static_cast<int64_t>(p->image_height / p->patch) * (p->image_width / p->patch);
  const int64_t token_bytes = tokens64 * p->depth;
  if (!output_ok || token_bytes > mcuf_glue::kMaxElements ||
      output_bytes != static_cast<size_t>(token_bytes)) {
    MicroPrintf("%s: output 0 ('output') must be int8 tokens [%lld, %d]", kOp,
                static_cast<long long>(tokens64), static_cast<int>(p->depth));
    micro_context->DeallocateTempTfLiteTensor(weights);
    return kTfLiteError;
  }
  const int tokens = static_cast<int>(tokens64);

  mcuf_quant x, conv_out, tokens_read, position;
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kImage, "input", &x));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "conv_out", &conv_out));
  TF_LITE_ENSURE_OK(context, mcuf_glue::RoleQuant(context, options, kOp, "tokens", &tokens_read));
  // TFLM's int8 CONV_2D is always per channel: one multiplier per output
  // channel from filter scale [o % scales], the weights' zero point ignored.
  const int scales = affine->scale->size;
  bool uniform = true;
  for (int i = 1; i < scales; ++i) {
    uniform = uniform && affine->scale->data[i] == affine->scale->data[0];
  }
  int32_t one_multiplier = 0, one_shift = 0;
  int32_t* multipliers = &one_multiplier;
  int32_t* shifts = &one_shift;
  int channels = 1;
  if (!uniform) {
    channels = p->depth;
    multipliers = static_cast<int32_t*>(
        context->AllocatePersistentBuffer(context, 2 * sizeof(int32_t) * p->depth));
    if (multipliers == nullptr) {
      micro_context->DeallocateTempTfLiteTensor(weights);
      return kTfLiteError;
    }
    shifts = multipliers + p->depth;
  }
  const mcuf_status conv_status = mcuf_prepare_fully_connected(
      x, affine->scale->data, uniform ? 1 : scales, 0, 1, conv_out, channels, multipliers,
      shifts, &p->conv);
  p->conv.weight_bits = mcuf_glue::WeightBits(weights);
  micro_context->DeallocateTempTfLiteTensor(weights);
  if (conv_status != MCUF_OK) {
    MicroPrintf("%s: CONV_2D writing 'conv_out': TFLM cannot derive its multipliers", kOp);
    return kTfLiteError;
  }
  if (mcuf_glue::Present(node, kBias)) {
    TF_LITE_ENSURE_OK(context, mcuf_glue::CheckInput(context, node, kOp, kBias, "conv_bias",
                                                     kTfLiteInt32, p->depth, true));
  }
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckInput(context, node, kOp, kPosition, "pos",
                                                   kTfLiteInt8, tokens * p->depth, true));
  TF_LITE_ENSURE_OK(context, mcuf_glue::InputQuant(context, node, kOp, kPosition, "pos", &position));
  if (mcuf_prepare_add(tokens_read, position, y, &p->position) != MCUF_OK) {
    MicroPrintf("%s: ADD writing 'output': TFLM cannot derive its multipliers", kOp);
    return kTfLiteError;
  }
  mcuf_param_error error;
  TF_LITE_ENSURE_OK(context, mcuf_glue::CheckedParams(mcuf_patch_embed_check_params(p, &error),
                                                      error, kOp));
  return context->RequestScratchBufferInArena(context, mcuf_patch_embed_get_buffer_size(p),
                                              &data->scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  mcuf_patch_embed_params* p = &data->params;
  const TfLiteEvalTensor* image = tflite::micro::GetEvalInput(context, node, kImage);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  p->weights = static_cast<const int8_t*>(mcuf_glue::InputData(context, node, kWeights));
  p->bias = static_cast<const int32_t*>(mcuf_glue::InputData(context, node, kBias));
  p->position_table = static_cast<const int8_t*>(mcuf_glue::InputData(context, node, kPosition));
  return mcuf_glue::EvalStatus(
      mcuf_patch_embed(p, tflite::micro::GetTensorData<int8_t>(image),
                       tflite::micro::GetTensorData<int8_t>(output),
                       mcuf_glue::Scratch(context, data->scratch_index)),
      kOp, "output 0 ('output') overlaps input 0 ('input') other than the offline plan allows "
      "(at most mcuf_patch_embed_output_offset bytes after it)");
}

}  // namespace

const TFLMRegistration* Register_MCUF_PATCH_EMBED() {
  return mcuf_glue::Registration<OpData, Prepare, Eval>();
}
