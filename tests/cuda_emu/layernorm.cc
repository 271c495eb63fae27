/* kernels/layernorm.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "layernorm.cu"
