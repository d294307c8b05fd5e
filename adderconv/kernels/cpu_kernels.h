// What cpu_bindings.cpp (torch, Python) and cpu_kernels.cpp (the loops) share: the geometry of one call and
// the kernels, explicitly instantiated for float and double in cpu_kernels.cpp.
#pragma once

#include <cstdint>

namespace adderconv_cpu {

struct Geo {
    int64_t N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, G, HO, WO, CG, OG, J, L;
};

// Y (N, O, HO, WO) from X (N, C, H, W), W (O, C/G, KH, KW) and sw[o] = sum_j W[o, j]; all contiguous.
template <typename T>
void forward_impl(const T* x, const T* w, const T* sw, T* y, const Geo& g);
// dX (N, C, H, W, zeroed by the caller) += the clipped input gradient of dY (N, O, HO, WO).
template <typename T>
void grad_input_impl(const T* gr, const T* x, const T* w, T* dx, const Geo& g);

int vector_bytes();   // the SIMD width the loops were compiled for

}  // namespace adderconv_cpu
