/* Bare-metal runtime for Cortex-M7 firmware (see m7_runtime.h). */
#include "m7_runtime.h"

#define SEMIHOSTING_SYS_WRITE0 0x04
#define SEMIHOSTING_SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYSTICK_RELOAD 0x00FFFFFFu
#define SYSTICK_ENABLE_INTERRUPT_PROCESSOR_CLOCK 0x7u

static volatile uint32_t systick_wraps;

static uint32_t semihost(uint32_t operation, const void *argument) {
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mcuf_m7_write(const char *text) { semihost(SEMIHOSTING_SYS_WRITE0, text); }

void mcuf_m7_write_u64(uint64_t value) {
    char digits[21];
    int at = 20;
    digits[at] = '\0';
    do {
        digits[--at] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    mcuf_m7_write(digits + at);
}

void mcuf_m7_write_hex(const int8_t *bytes, int32_t size) {
    static const char hex[] = "0123456789abcdef";
    char chunk[65];
    int32_t i = 0;
    while (i < size) {
        int used = 0;
        for (; i < size && used < 64; ++i) {
            const uint8_t byte = (uint8_t)bytes[i];
            chunk[used++] = hex[byte >> 4];
            chunk[used++] = hex[byte & 0xFu];
        }
        chunk[used] = '\0';
        mcuf_m7_write(chunk);
    }
}

void mcuf_m7_exit(int code) {
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost(SEMIHOSTING_SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

void mcuf_m7_counter_start(void);
void mcuf_m7_counter_start(void) {
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = SYSTICK_ENABLE_INTERRUPT_PROCESSOR_CLOCK;
    /* The counter reads 0 until its first tick reloads it; mcuf_m7_ticks
     * reads 0 as the end of a period, so wait for that reload. */
    while (SYST_CVR == 0u) {
    }
}

void SysTick_Handler(void);
void SysTick_Handler(void) { ++systick_wraps; }

uint64_t mcuf_m7_ticks(void) {
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return ((uint64_t)wraps << 24) + (SYSTICK_RELOAD - value);
}

void mcuf_m7_spin(uint32_t iterations) {
    if (iterations == 0u) {
        return;
    }
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(iterations) : : "cc");
}
