# tflm_custom_ops.mk: adds the MCUF library and its TFLM glue to a build that
# uses TFLite-Micro's own Makefile (tensorflow/lite/micro/tools/make/Makefile).
#
# The simplest way: point TFLM's EXTERNAL_DIR hook at this folder, which makes
# TFLM's Makefile read Makefile_internal.inc here and so this fragment:
#
#   cd <tflite-micro tree>
#   make -f tensorflow/lite/micro/tools/make/Makefile \
#        EXTERNAL_DIR=<mcuformer-tf checkout>/tflm_custom_ops microlite
#
# libtensorflow-microlite.a then also holds our C kernels and glue, compiled
# with TFLM's flags for the chosen TARGET (e.g. TARGET=cortex_m_generic
# TARGET_ARCH=cortex-m7+fp FPU=fpv5-sp-d16 for the STM32F746); the
# application registers the ops with
# mcuf_register_custom_ops(resolver) from glue/mcuf_ops.h. Build a plain
# microlite (without EXTERNAL_DIR) for the host runner, which compiles the
# glue itself.
#
# Your own Makefile can instead include this file after TFLM's variables are
# set, and add MCUF_SRCS to the sources and MCUF_INCLUDES to the flags it
# compiles with (as TFLM's -I flags, for the glue).
#
# Defines: MCUF_DIR, MCUF_SRCS (C library and glue), MCUF_HDRS, MCUF_INCLUDES;
# appends MCUF_SRCS to MICROLITE_CC_KERNEL_SRCS, MCUF_HDRS to
# MICROLITE_CC_HDRS and MCUF_INCLUDES to INCLUDES.

MCUF_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

MCUF_SRCS := \
  $(wildcard $(MCUF_DIR)/src/*.c) \
  $(wildcard $(MCUF_DIR)/glue/*.cc)

MCUF_HDRS := \
  $(wildcard $(MCUF_DIR)/include/mcuf/*.h) \
  $(wildcard $(MCUF_DIR)/glue/*.h)

MCUF_INCLUDES := \
  -I$(MCUF_DIR)/include \
  -I$(MCUF_DIR)/glue

MICROLITE_CC_KERNEL_SRCS += $(MCUF_SRCS)
MICROLITE_CC_HDRS += $(MCUF_HDRS)
INCLUDES += $(MCUF_INCLUDES)
