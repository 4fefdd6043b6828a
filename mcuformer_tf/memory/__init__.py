"""Memory, predicted and measured (the README's "Memory" and `report`): SRAM and flash of a subnet.

`estimate.memory_of` predicts, from a SubnetConfig alone, the arena and flash of its unfused and
fused exports (the tuner's budget check, thousands a second), from `form` (the export form), `net`
(the graph both plans rebuild), `unfused_plan` and `fused_plan` (non-persistent arenas), `counts`
and `mcuf_options` (what the files hold), `persistent` and `flash`; `report` measures a .tflite's
plan and flash split; `arena_search` finds the smallest arena with which stock TFLM allocates and
invokes. Uses `nas`, `tflm` and `compiler`.
"""
