// What int8_bindings.cpp (torch, Python) and int8_kernels.cpp (the arithmetic) share: the geometry of one call,
// the job (raw pointers the bindings checked and allocated), and the vector-path state.
#pragma once

#include <cstdint>

namespace adderconv_int8 {

struct Geo {
    int64_t N, H, W, C, O, KH, KW, SH, SW, PH, PW, DH, DW, G, HO, WO, CG, OG, K, T, L, NB, Hp, Wp;
};

struct Job {
    const uint8_t* x;         // the padded input (N, Hp, Wp, C)
    const uint8_t* w;         // the weights packed for the path's lanes
    int64_t z, lo, qz;        // zero point, clamp floor, the codes' zero point (mode 3)
    int mode, isa;            // epilogue mode 0-3 (int8_kernels.cpp), vector path
    const float* a;           // epilogue scale and shift per output channel (mode > 0)
    const float* b;
    void* y;                  // the output (N, HO, WO, O) of esize bytes per element (mode 3 without store_float:
    int64_t esize;            // not written)
    bool store_float, relu;
    const float* res;         // mode 3: the residual, laid out as the output
    double qscale;            // mode 3: the codes' scale (0: no codes)
    uint8_t* codes;
};

// The sums and the epilogue of every output row, in parallel.
void run(const Geo& g, const Job& job);
// dst[i] = clamp(round_half_even(src[i] / scale) + z, lo, 255) on the current path, in parallel.
void quantize(const float* src, uint8_t* dst, int64_t n, float scale, float z, float lo);

int current_isa();            // the path in use (an index into adderconv.kernels.int8.ISAS)
void use_isa(int isa);        // one supports_isa() said yes to
int best_isa();
bool supports_isa(int isa);
int lanes(int isa);           // output channels per vector of a path

}  // namespace adderconv_int8
