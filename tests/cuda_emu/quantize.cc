/* kernels/quantize.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "quantize.cu"
