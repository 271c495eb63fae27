/* kernels/pixels.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "pixels.cu"
