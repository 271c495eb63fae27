/* kernels/tiles.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "tiles.cu"
