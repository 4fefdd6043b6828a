/* Kernel test firmware: runs every case of the generated table on the
 * emulated Cortex-M7, in one arena laid out as the deployed kernels use it
 * (the attention and the MLP in place on their tokens, the patch embedding
 * into tokens that overwrite its image, at mcuf_patch_embed_output_offset),
 * and prints per case one line:
 *
 *   case <name> <ok|MISMATCH|ERROR> ticks=<SysTick ticks> out=<hex bytes>
 *
 * then a calibration line for the counter and a summary. Exit status: the
 * number of cases whose bytes differ from the host build's (or that fail).
 */
#include <stddef.h>
#include <string.h>

#include "kernel_test.h"
#include "m7_runtime.h"
#include "mcuf/attention.h"
#include "mcuf/block_ops.h"
#include "mcuf/mlp.h"
#include "mcuf/patch_embed.h"

#define CALIBRATION_TURNS 100000u

static size_t round16(size_t bytes) { return (bytes + 15u) & ~(size_t)15u; }

/* Runs one case; its output is left at *output. */
static mcuf_status run_case(const mcuf_test_case *c, int8_t **output,
                            size_t *needed) {
    int8_t *arena = mcuf_test_arena;
    switch (c->kind) {
    case MCUF_TEST_PATCH_EMBED: {
        const mcuf_patch_embed_params *p = c->params;
        const ptrdiff_t offset = mcuf_patch_embed_output_offset(p);
        const size_t span = round16((size_t)(c->input_bytes > c->output_bytes
                                                 ? c->input_bytes
                                                 : c->output_bytes));
        int8_t *scratch = arena + span;
        *needed = span + mcuf_patch_embed_get_buffer_size(p);
        if (*needed > (size_t)mcuf_test_arena_bytes) return MCUF_ERR_ARGUMENT;
        memcpy(arena - offset, c->input, (size_t)c->input_bytes);
        *output = arena;
        return mcuf_patch_embed(p, arena - offset, arena, scratch);
    }
    case MCUF_TEST_ATTENTION:
    case MCUF_TEST_MLP: {
        const size_t tokens = round16((size_t)c->input_bytes);
        int8_t *scratch = arena + tokens;
        *needed = tokens + (c->kind == MCUF_TEST_MLP
                                ? mcuf_mlp_get_buffer_size(c->params)
                                : mcuf_attention_get_buffer_size(c->params));
        if (*needed > (size_t)mcuf_test_arena_bytes) return MCUF_ERR_ARGUMENT;
        memcpy(arena, c->input, (size_t)c->input_bytes);
        *output = arena;
        if (c->kind == MCUF_TEST_MLP) {
            const mcuf_mlp_params *p = c->params;
            return mcuf_mlp(p, arena, c->input_bytes / p->depth, scratch);
        }
        return mcuf_attention(c->params, arena, scratch);
    }
    case MCUF_TEST_LINEAR: {
        const mcuf_fc_layer *layer = c->params;
        const size_t rows = round16((size_t)c->input_bytes);
        int16_t *tile =
            (int16_t *)(void *)(arena + rows + round16((size_t)c->output_bytes));
        *needed = rows + round16((size_t)c->output_bytes) +
                  8u * (size_t)layer->input_depth;
        if (*needed > (size_t)mcuf_test_arena_bytes) return MCUF_ERR_ARGUMENT;
        memcpy(arena, c->input, (size_t)c->input_bytes);
        *output = arena + rows;
        mcuf_fully_connected_rows(&layer->params, arena,
                                  c->input_bytes / layer->input_depth,
                                  layer->input_depth, layer->weights,
                                  layer->bias, layer->output_depth, *output,
                                  tile);
        return MCUF_OK;
    }
    case MCUF_TEST_MATMUL: {
        /* input: lhs rows [n][depth], n = output bytes / columns */
        const mcuf_batch_matmul_params *p = c->params;
        const int32_t n = c->output_bytes / c->columns;
        const int32_t depth = c->input_bytes / n;
        const size_t rows = round16((size_t)c->input_bytes);
        int16_t *tile =
            (int16_t *)(void *)(arena + rows + round16((size_t)c->output_bytes));
        *needed = rows + round16((size_t)c->output_bytes) + 8u * (size_t)depth;
        if (*needed > (size_t)mcuf_test_arena_bytes) return MCUF_ERR_ARGUMENT;
        memcpy(arena, c->input, (size_t)c->input_bytes);
        *output = arena + rows;
        if (p->rhs_transposed) {
            mcuf_batch_matmul_rows(p, arena, n, depth, c->rhs, c->columns,
                                   *output, tile);
        } else {
            int32_t r;
            for (r = 0; r < n; ++r) {
                mcuf_batch_matmul_row(p, arena + r * depth, depth, c->rhs,
                                      c->columns, *output + r * c->columns);
            }
        }
        return MCUF_OK;
    }
    }
    return MCUF_ERR_ARGUMENT;
}

int main(void) {
    int failures = 0;
    int32_t i;
    uint64_t start;
    mcuf_m7_write("mcuf kernel test: ");
    mcuf_m7_write_u64((uint64_t)mcuf_test_case_count);
    mcuf_m7_write(" cases\n");
    for (i = 0; i < mcuf_test_case_count; ++i) {
        const mcuf_test_case *c = &mcuf_test_cases[i];
        int8_t *output = NULL;
        size_t needed = 0;
        mcuf_status status;
        uint64_t ticks;
        int same;
        start = mcuf_m7_ticks();
        status = run_case(c, &output, &needed);
        ticks = mcuf_m7_ticks() - start;
        same = status == MCUF_OK &&
               memcmp(output, c->expected, (size_t)c->output_bytes) == 0;
        failures += !same;
        mcuf_m7_write("case ");
        mcuf_m7_write(c->name);
        mcuf_m7_write(status != MCUF_OK ? " ERROR" : same ? " ok" : " MISMATCH");
        mcuf_m7_write(" ticks=");
        mcuf_m7_write_u64(ticks);
        mcuf_m7_write(" out=");
        if (status == MCUF_OK) {
            mcuf_m7_write_hex(output, c->output_bytes);
        }
        mcuf_m7_write("\n");
    }
    start = mcuf_m7_ticks();
    mcuf_m7_spin(CALIBRATION_TURNS);
    mcuf_m7_write("calibration instructions=");
    mcuf_m7_write_u64(2u * CALIBRATION_TURNS);
    mcuf_m7_write(" ticks=");
    mcuf_m7_write_u64(mcuf_m7_ticks() - start);
    mcuf_m7_write("\nfailures=");
    mcuf_m7_write_u64((uint64_t)failures);
    mcuf_m7_write("\n");
    return failures;
}
