/* kernels/backend_cuda.cu built for the CPU through the SIMT emulator (kernels/emu/). */
#include "backend_cuda.cu"
