// The kernel table for CPUs with AVX2 and FMA; compiled with -mavx2 -mfma.
#include "isa_avx2.h"
#include "kernel_bodies.h"

namespace fastgen_native {

constinit const KernelTable avx2_kernels = make_table<Avx2Isa>("avx2");

}  // namespace fastgen_native
