// The kernel table for CPUs with AVX-512F; compiled with -mavx512f.
#include "isa_avx512.h"
#include "kernel_bodies.h"

namespace fastgen_native {

constinit const KernelTable avx512_kernels = make_table<Avx512Isa>("avx512");

}  // namespace fastgen_native
