/* Startup for Cortex-M7 firmware: the vector table, and a reset handler that
 * enables the FPU (the code is built for the hard-float ABI), copies .data
 * from flash, clears .bss, starts the instruction counter, runs the static
 * constructors (C++ firmware) and calls main. The symbols come from
 * sections.ld; newlib's system calls are nosys.specs' stubs.
 */
#include <stdint.h>
#include <string.h>

#include "m7_runtime.h"

extern uint32_t __stack_top;
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

/* What C++ static objects register their destructors with (crtbegin's, which
 * -nostartfiles leaves out); they never run: main's return ends the run. */
void *__dso_handle = 0;

int main(void);
void mcuf_m7_counter_start(void);
void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define CPACR_CP10_CP11_FULL_ACCESS (0xFu << 20)

void Default_Handler(void) {
    mcuf_m7_write("fault: unexpected exception\n");
    mcuf_m7_exit(3);
}

/* Core exceptions 1-15, then the first IRQs (none is used). */
__attribute__((section(".vectors"), used))
static void (*const vector_table[16 + 16])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
};

void Reset_Handler(void) {
    SCB_CPACR |= CPACR_CP10_CP11_FULL_ACCESS;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    memcpy(&__data_start, &__data_load,
           (size_t)((char *)&__data_end - (char *)&__data_start));
    memset(&__bss_start, 0, (size_t)((char *)&__bss_end - (char *)&__bss_start));
    mcuf_m7_counter_start();
    for (void (**init)(void) = __init_array_start; init < __init_array_end; ++init) {
        (*init)();
    }
    mcuf_m7_exit(main());
}
