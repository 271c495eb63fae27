/* kernels/patch.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "patch.cu"
