/* kernels/elementwise.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "elementwise.cu"
