// Shared TFLM glue of the MCUF ops: reading the flexbuffer custom options and
// the tensors' quantisation, and filling mcuf/ structs through mcuf/prepare.h.
//
// The options (mcuformer_tf/compiler/fuse.py) are a flexbuffer map whose
// "scale" and "zero_point" maps hold, by role, the quantisation of every
// tensor the replaced builtins wrote except the block's output; a role is
// there exactly when the block has that tensor. Constants and the block's
// input and output carry their own quantisation as tensors of the operator.
#ifndef MCUF_GLUE_MCUF_GLUE_H
#define MCUF_GLUE_MCUF_GLUE_H

#include <cfloat>
#include <cstdint>
#include <cstring>

#include "flatbuffers/flexbuffers.h"
#include "mcuf/block_ops.h"
#include "mcuf/params_check.h"
#include "mcuf/prepare.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"

namespace mcuf_glue {

// The "scale" and "zero_point" maps of a fused operator's options.
struct Options {
  flexbuffers::Map root = flexbuffers::Map::EmptyMap();
  flexbuffers::Map scale = flexbuffers::Map::EmptyMap();
  flexbuffers::Map zero_point = flexbuffers::Map::EmptyMap();
};

// Reads node->custom_initial_data; fails naming `op` when it is no such map.
TfLiteStatus ReadOptions(TfLiteContext* context, const TfLiteNode* node,
                         const char* op, Options* options);

// The most elements a tensor an MCUF op reads may have: its byte counts fit
// the kernels' int32 sizes.
constexpr int64_t kMaxElements = INT32_MAX;

// The tensor's affine quantisation with at least one scale and zero point,
// or nullptr.
const TfLiteAffineQuantization* Affine(const TfLiteTensor* tensor);

// Whether scale and zero point are an int8 tensor's: a finite positive scale,
// a zero point within int8.
bool Int8Quant(double scale, int64_t zero_point);

// The elements of `tensor`, or -1 when a dimension is negative or their
// product exceeds kMaxElements.
int64_t Elements(const TfLiteTensor* tensor);

// Whether the block has the intermediate tensor `role`.
bool Has(const Options& options, const char* role);

// The quantisation of intermediate tensor `role`; fails naming it when absent
// (or when role is nullptr: FirstRole found none).
TfLiteStatus RoleQuant(TfLiteContext* context, const Options& options,
                       const char* op, const char* role, mcuf_quant* quant);

// The first of `roles` (nullptr-terminated) the block has, or nullptr.
const char* FirstRole(const Options& options, const char* const* roles);

// Reads the (first) scale and zero point of operator input `index` (`role`),
// failing naming it when it has none.
TfLiteStatus InputQuant(TfLiteContext* context, TfLiteNode* node,
                        const char* op, int index, const char* role,
                        mcuf_quant* quant);

// Checks operator input `index` (`role`) has `type` and `elements` elements
// (elements < 0: any) and, with `constant`, that it is a constant.
TfLiteStatus CheckInput(TfLiteContext* context, TfLiteNode* node,
                        const char* op, int index, const char* role,
                        TfLiteType type, int elements, bool constant);

// The weight width of an int8 (8) or packed INT4 (4) filter: the kernels'
// mcuf_fc_params.weight_bits.
int32_t WeightBits(const TfLiteTensor* weights);

// Whether operator input `index` is present (not -1).
bool Present(const TfLiteNode* node, int index);

// One FULLY_CONNECTED layer of a linear: weights input `weights_index`
// [output_depth][input_depth] (int8 or packed INT4, per tensor or per
// channel), bias input
// `bias_index` (int32 [output_depth] or -1), reading a tensor of quantisation
// `input`, writing one of `output`. Per-channel multipliers go to the
// persistent arena when they differ between channels.
TfLiteStatus PrepareFcLayer(TfLiteContext* context, TfLiteNode* node,
                            const char* op, const char* role, int weights_index,
                            int bias_index, int input_depth, mcuf_quant input,
                            mcuf_quant output, mcuf_fc_layer* layer);

// A linear layer `name` (roles name_down_out, name_out): the low-rank pair
// when the block has name_down_out, else one layer. Returns its output depth.
TfLiteStatus PrepareLinear(TfLiteContext* context, TfLiteNode* node,
                           const char* op, const Options& options,
                           const char* name, int down_index, int weights_index,
                           int bias_index, int input_depth, mcuf_quant input,
                           mcuf_linear* linear, int* output_depth);

// The input indices of a linear layer, for Eval.
struct LinearInputs {
  int down;
  int weights;
  int bias;
};

// Points a prepared linear's weights and biases at the operator's tensors.
void BindLinear(TfLiteContext* context, TfLiteNode* node,
                const LinearInputs& inputs, mcuf_linear* linear);

// The LayerNorm reading the block input (quantisation `x`), from input
// indices eps, gamma, beta; *out_role receives its result's role.
TfLiteStatus PrepareLayerNorm(TfLiteContext* context, TfLiteNode* node,
                              const char* op, const Options& options,
                              mcuf_quant x, int depth, int eps_index,
                              int gamma_index, int beta_index,
                              mcuf_layer_norm* ln, const char** out_role);

// Points a prepared LayerNorm at its constants; gamma_index/beta_index -1
// where the block has no MUL(gamma)/ADD(beta).
void BindLayerNorm(TfLiteContext* context, TfLiteNode* node, int eps_index,
                   int gamma_index, int beta_index, mcuf_layer_norm* ln);

// Pointer to the data of operator input `index`, or nullptr when absent.
const void* InputData(TfLiteContext* context, TfLiteNode* node, int index);

// Init of every MCUF op: its OpData, zeroed by Prepare, in the persistent arena.
template <typename OpData>
void* InitOpData(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

// The end of Prepare: `status` of a mcuf_*_check_params, failing naming `op`
// and the field `error` names.
TfLiteStatus CheckedParams(mcuf_status status, const mcuf_param_error& error,
                           const char* op);

// Fails naming `op` unless the node has `inputs` inputs and one output.
TfLiteStatus CheckArity(const TfLiteNode* node, const char* op, int inputs);

// The operator inputs of a block's pre-LayerNorm.
struct LayerNormInputs {
  int eps;
  int gamma;
  int beta;
};

// What an in-place token op (MCUF_ATTENTION, MCUF_MLP) knows once its tokens
// and pre-LayerNorm are prepared.
struct TokenBlock {
  int tokens;             // N: the input's bytes / D
  int depth;              // D: the input's last dimension
  mcuf_quant x;           // the block input
  mcuf_quant y;           // the block output
  mcuf_quant normalized;  // the pre-LayerNorm's result
  int gamma_index;        // -1 without MUL(gamma)
  int beta_index;         // -1 without ADD(beta)
};

// Checks input 0 and output 0 are int8 tokens [..., D] of one size, reads
// their quantisation and prepares the pre-LayerNorm into *ln.
TfLiteStatus PrepareTokenBlock(TfLiteContext* context, TfLiteNode* node,
                               const char* op, const Options& options,
                               const LayerNormInputs& inputs,
                               mcuf_layer_norm* ln, TokenBlock* block);

// Eval of an in-place token op: its output tokens, holding the input's bytes
// (copied where the offline plan did not put the output on the input);
// *bytes receives their size.
int8_t* TokensInPlace(TfLiteContext* context, TfLiteNode* node, size_t* bytes);

// The OpData of an in-place token op: its kernel's params (with `ln` and
// `depth` members) and what Eval needs besides.
template <typename Params>
struct TokenOpData {
  Params params;
  int gamma_index;  // -1 without MUL(gamma)
  int beta_index;   // -1 without ADD(beta)
  int scratch_index;
};

// What a token op's Prepare holds once StartTokenOp has run.
template <typename Params>
struct TokenOpStart {
  TokenOpData<Params>* data;
  Params* params;
  Options options;
  TokenBlock block;
};

// The start of a token op's Prepare: `inputs` inputs and one output, its
// options, zeroed params, the token block and its pre-LayerNorm.
template <typename Params>
TfLiteStatus StartTokenOp(TfLiteContext* context, TfLiteNode* node,
                          const char* op, int inputs,
                          const LayerNormInputs& ln_inputs,
                          TokenOpStart<Params>* start) {
  start->data = static_cast<TokenOpData<Params>*>(node->user_data);
  start->params = &start->data->params;
  TF_LITE_ENSURE_OK(context, CheckArity(node, op, inputs));
  TF_LITE_ENSURE_OK(context, ReadOptions(context, node, op, &start->options));
  std::memset(start->params, 0, sizeof *start->params);
  TF_LITE_ENSURE_OK(context, PrepareTokenBlock(context, node, op, start->options, ln_inputs,
                                               &start->params->ln, &start->block));
  start->params->depth = start->block.depth;
  start->data->gamma_index = start->block.gamma_index;
  start->data->beta_index = start->block.beta_index;
  return kTfLiteOk;
}

// The end of a token op's Prepare: `check` of its params (failing naming
// `op` and the field), then its kernel's scratch, `size`(params) bytes.
template <typename Params>
TfLiteStatus RequestTokenScratch(TfLiteContext* context, TokenOpStart<Params>* start,
                                 const char* op,
                                 mcuf_status (*check)(const Params*, mcuf_param_error*),
                                 size_t (*size)(const Params*)) {
  mcuf_param_error error;
  TF_LITE_ENSURE_OK(context, CheckedParams(check(start->params, &error), error, op));
  return context->RequestScratchBufferInArena(context, size(start->params),
                                              &start->data->scratch_index);
}

// What a token op's Eval runs its kernel with.
template <typename Params>
struct TokenOpEval {
  Params* params;   // with the pre-LayerNorm's constants bound
  int8_t* tokens;   // the output, holding the input tokens (TokensInPlace)
  size_t bytes;     // their size
  int8_t* scratch;  // the buffer Prepare requested
};

// The start of a token op's Eval.
template <typename Params>
TokenOpEval<Params> BindTokenOp(TfLiteContext* context, TfLiteNode* node, int eps_index) {
  auto* data = static_cast<TokenOpData<Params>*>(node->user_data);
  BindLayerNorm(context, node, eps_index, data->gamma_index, data->beta_index,
                &data->params.ln);
  TokenOpEval<Params> eval;
  eval.params = &data->params;
  eval.tokens = TokensInPlace(context, node, &eval.bytes);
  eval.scratch = static_cast<int8_t*>(context->GetScratchBuffer(context, data->scratch_index));
  return eval;
}

// The end of an in-place token block: its last linear `name` (inputs
// `inputs`, reading `input_depth` channels of quantisation `input`), which
// must write the block's D channels (role name_out), and the residual ADD of
// the block input and that branch, written as the block output.
TfLiteStatus PrepareBranchOut(TfLiteContext* context, TfLiteNode* node,
                              const char* op, const Options& options,
                              const char* name, const LinearInputs& inputs,
                              int input_depth, mcuf_quant input,
                              const TokenBlock& block, mcuf_linear* linear,
                              mcuf_add_params* residual);

// Eval's result from an mcuf kernel's status: on failure `failure`, naming
// `op`, on TFLM's log.
TfLiteStatus EvalStatus(int status, const char* op, const char* failure);

// Eval: the scratch buffer Prepare requested as `index`.
int8_t* Scratch(TfLiteContext* context, int index);

// The TFLMRegistration of an MCUF op: InitOpData<OpData>, Prepare, Eval.
template <typename OpData, TfLiteStatus (*Prepare)(TfLiteContext*, TfLiteNode*),
          TfLiteStatus (*Eval)(TfLiteContext*, TfLiteNode*)>
const TFLMRegistration* Registration() {
  static TFLMRegistration registration =
      tflite::micro::RegisterOp(InitOpData<OpData>, Prepare, Eval);
  return &registration;
}

}  // namespace mcuf_glue

#endif  // MCUF_GLUE_MCUF_GLUE_H
