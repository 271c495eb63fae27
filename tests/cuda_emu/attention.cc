/* kernels/attention.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "attention.cu"
