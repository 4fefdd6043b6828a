"""The boards (the README's "Put it on a board"): target sizes, Cortex-M7 firmware, deployment.

`targets` holds each board's SRAM, flash and stated runtime overhead; `cortex_m7` builds and links
firmware with Debian's arm toolchain and runs it in qemu with instruction counts; `kernel_test`
checks the MCUF kernels on the emulated Cortex-M7 against the host; `deploy` writes a TFLM project
(templates/deploy) and runs it as firmware. Uses `tflm` and `compiler`.
"""
