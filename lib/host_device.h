/* Marks inline functions that the CUDA kernels compile for the device too
 * (headers shared by the CPU backend and kernels/). */
#ifndef BSQ_HOST_DEVICE_H
#define BSQ_HOST_DEVICE_H

#if defined(__CUDACC__)
#define BSQ_HOST_DEVICE __host__ __device__
#else
#define BSQ_HOST_DEVICE
#endif

#endif
