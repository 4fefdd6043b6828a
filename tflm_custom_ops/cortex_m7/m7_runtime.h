/* The bare-metal runtime of our Cortex-M7 firmware: semihosting output and
 * exit code, and an instruction counter.
 *
 * Semihosting (BKPT 0xAB) is what qemu-system-arm -semihosting and a debug
 * probe understand; on a board without a debugger attached it would halt, so
 * this runtime is for the emulator and for debugging sessions. The counter is
 * SysTick on the processor clock, widened to 64 bits by its wrap interrupt:
 * under qemu -icount shift=0 every instruction takes 1 ns of virtual time and
 * mps2-an500's processor clock is 25 MHz, so one tick is exactly
 * MCUF_M7_INSTRUCTIONS_PER_TICK instructions (on hardware a tick is a cycle).
 */
#ifndef MCUF_M7_RUNTIME_H
#define MCUF_M7_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MCUF_M7_INSTRUCTIONS_PER_TICK 40

/* Writes a NUL-terminated string to the host (SYS_WRITE0). */
void mcuf_m7_write(const char *text);
/* Writes an unsigned decimal number. */
void mcuf_m7_write_u64(uint64_t value);
/* Writes `size` bytes as lowercase hex, two digits per byte. */
void mcuf_m7_write_hex(const int8_t *bytes, int32_t size);
/* Ends the emulation with `code` as the exit status (SYS_EXIT_EXTENDED). */
void mcuf_m7_exit(int code) __attribute__((noreturn));

/* SysTick ticks since reset (started by the reset handler). */
uint64_t mcuf_m7_ticks(void);

/* Runs `iterations` turns of a two-instruction loop (SUBS, BNE): a known
 * instruction count to check the counter's scale against. */
void mcuf_m7_spin(uint32_t iterations);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_M7_RUNTIME_H */
