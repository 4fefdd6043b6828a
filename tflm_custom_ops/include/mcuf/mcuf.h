/* mcuf: the MCUFormer operator library (portable C99).
 *
 * Library-wide definitions: the version and the status codes every kernel
 * returns for bad arguments (CMSIS-NN style: a status, never an assert).
 */
#ifndef MCUF_MCUF_H
#define MCUF_MCUF_H

#ifdef __cplusplus
extern "C" {
#endif

/* Versioned together with the mcuformer_tf Python package. */
#define MCUF_VERSION "0.1.0"

/* Rows (tokens, queries) a linear layer's inner loop computes together: one
 * weight load serves them all (mcuf/dot.h). The fused kernels' scratch
 * grows with it. */
#define MCUF_TILE 4

typedef enum {
    MCUF_OK = 0,
    MCUF_ERR_ARGUMENT = -1 /* an argument is outside the documented range */
} mcuf_status;

/* MCUF_VERSION of the compiled library (lets a loader check what it got). */
const char *mcuf_version(void);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_MCUF_H */
