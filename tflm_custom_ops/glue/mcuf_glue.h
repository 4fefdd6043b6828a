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

#include <cstdint>

#include "flatbuffers/flexbuffers.h"
#include "mcuf/block_ops.h"
#include "mcuf/prepare.h"
#include "tensorflow/lite/c/common.h"
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

// Whether operator input `index` is present (not -1).
bool Present(const TfLiteNode* node, int index);

// One FULLY_CONNECTED layer of a linear: weights input `weights_index`
// [output_depth][input_depth] (int8, per tensor or per channel), bias input
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

// The residual ADD closing a block: its input plus the branch (role
// `branch_role`), written as its output.
TfLiteStatus PrepareResidual(TfLiteContext* context, const Options& options,
                             const char* op, const char* branch_role,
                             const TokenBlock& block, mcuf_add_params* residual);

// Eval of an in-place token op: its output tokens, holding the input's bytes
// (copied where the offline plan did not put the output on the input);
// *bytes receives their size.
int8_t* TokensInPlace(TfLiteContext* context, TfLiteNode* node, size_t* bytes);

}  // namespace mcuf_glue

#endif  // MCUF_GLUE_MCUF_GLUE_H
