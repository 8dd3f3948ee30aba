// The kernel table for any CPU (the fallback).
#include "isa_scalar.h"
#include "kernel_bodies.h"

namespace fastgen_native {

constinit const KernelTable scalar_kernels = make_table<ScalarIsa>("scalar");

}  // namespace fastgen_native
