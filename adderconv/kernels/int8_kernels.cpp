// int8 adder convolution on uint8 codes: S[n,oh,ow,o] = sum_j |x_col[j] - w[o,j]|  (int32, exact).
//
// Built on the user's machine at first use (adderconv/kernels/int8.py) WITHOUT -march=native: every vector
// path carries its own target attribute and the path is chosen at run time from the CPU (cpuid), so one
// build serves AVX-512BW (with or without VNNI), AVX2, SSE2 and generic (scalar, portable C++) on x86, NEON
// and generic on AArch64, and tests can force each path on one machine (set_isa). The micro-kernels are in
// int8_sad.h. This file is the arithmetic (no torch headers, so it compiles in seconds, in parallel with
// int8_bindings.cpp: the tensor checks, weight packing, padding and the Python module; int8_kernels.h between).
//
// Layout. The input is channels-last uint8 (N, H, W, C), padded here once with the zero point (a padded tap
// then contributes |z - w|, which is what zero padding means on the shared grid). The reduction index
// j = (kh, kw, c) runs along contiguous bytes. Weights are packed [G][O-block][T][L][8]: T = ceil(K / 8)
// chunks of 8 reduction bytes, L output channels per vector (8 for 64-byte vectors, 4, 2 (SSE2, NEON), 1),
// tails and missing channels filled with the zero point. One vpsadbw of a broadcast 8-byte input chunk against
// one packed weight vector gives L partial sums, one per output channel, in separate 64-bit lanes: nothing is
// reduced horizontally, and the lanes hold the final per-channel sums when the chunks are done.
// When the channels of a group are a multiple of 8 the chunks are read straight from the padded input;
// otherwise (odd channel counts, depthwise) each output row's patches are gathered first.
//
// Epilogue (fused, per output channel o, in float32 with no contraction, exactly what the PyTorch float
// simulation does): mode 0 writes S (int32); mode 1 writes a[o] * S + b[o] (float32: dequantisation and the
// folded BatchNorm); mode 2 writes clamp(round_half_even(a[o] * S + b[o]), lo, 255) (uint8: requantised to
// the next layer's grid, lo = its zero point when a ReLU is fused, else 0).
#include "int8_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "int8_sad.h"

namespace adderconv_int8 {
namespace {

int g_isa = detect_isa();
constexpr float kMagic = 12582912.0f;   // 1.5 * 2^23: (v + M) - M rounds half to even for |v| < 2^22

// The fused epilogue of one output row of one group: S (WO x OGpad, int32) -> the output (WO x O).
// Free of contraction (built with -ffp-contract=off) so it rounds exactly as PyTorch does; the body is compiled
// once per vector path (target attributes) so the compiler vectorises it at that path's width.
struct Epi {
    const int32_t* S;
    int64_t WO, OG, ldS, o0, O;
    int mode;
    const float* a;
    const float* b;
    int64_t lo;
    void* out_row;
    // mode 3 (residual): out = [relu](a * S + b + res) in float32; codes (if not null) = the next layers'
    // quantiser applied to out, clamp(round_half_even(out / qs) + qz, 0, 255), exactly as quantize() does.
    const float* res = nullptr;   // the residual row, laid out as out_row (WO x O)
    int relu = 0;
    float qs = 1.0f, qz = 0.0f;
    uint8_t* codes_row = nullptr;
};

__attribute__((always_inline)) inline float round_clamp(float v, float flo) {
    v = v < -1024.0f ? -1024.0f : v;
    v = v > 1024.0f ? 1024.0f : v;
    v = (v + kMagic) - kMagic;
    v = v < flo ? flo : v;
    return v > 255.0f ? 255.0f : v;
}

__attribute__((always_inline)) inline float quantize_one(float v, float scale, float fz, float flo);

// Works on a copy of the Epi: a uint8 store may alias anything, so through the reference GCC would reload the
// bounds after every store and vectorise none of the uint8 loops (with -fno-trapping-math, it does: 8 or 16 lanes).
__attribute__((always_inline)) inline void epilogue_body(const Epi& epi) {
    const Epi e = epi;
    if (e.mode == 3) {
        float* y = static_cast<float*>(e.out_row);
        const float* __restrict__ a = e.a + e.o0;
        const float* __restrict__ b = e.b + e.o0;
        for (int64_t w = 0; w < e.WO; ++w) {
            const int32_t* __restrict__ s = e.S + w * e.ldS;
            const float* __restrict__ r = e.res + w * e.O + e.o0;
            float* __restrict__ yr = y + w * e.O + e.o0;
            for (int64_t o = 0; o < e.OG; ++o) {
                const float m = a[o] * static_cast<float>(s[o]);
                float v = (m + b[o]) + r[o];
                if (e.relu) v = v < 0.0f ? 0.0f : v;
                yr[o] = v;
            }
            if (e.codes_row) {
                uint8_t* __restrict__ c = e.codes_row + w * e.O + e.o0;
                for (int64_t o = 0; o < e.OG; ++o)
                    c[o] = static_cast<uint8_t>(static_cast<int32_t>(quantize_one(yr[o], e.qs, e.qz, 0.0f)));
            }
        }
    } else if (e.mode == 0) {
        int32_t* y = static_cast<int32_t*>(e.out_row);
        for (int64_t w = 0; w < e.WO; ++w)
            for (int64_t o = 0; o < e.OG; ++o) y[w * e.O + e.o0 + o] = e.S[w * e.ldS + o];
    } else if (e.mode == 1) {
        float* y = static_cast<float*>(e.out_row);
        const float* __restrict__ a = e.a + e.o0;
        const float* __restrict__ b = e.b + e.o0;
        for (int64_t w = 0; w < e.WO; ++w) {
            const int32_t* __restrict__ s = e.S + w * e.ldS;
            float* __restrict__ yr = y + w * e.O + e.o0;
            for (int64_t o = 0; o < e.OG; ++o) {
                const float m = a[o] * static_cast<float>(s[o]);
                yr[o] = m + b[o];
            }
        }
    } else {
        uint8_t* y = static_cast<uint8_t*>(e.out_row);
        const float flo = static_cast<float>(e.lo);
        const float* __restrict__ a = e.a + e.o0;
        const float* __restrict__ b = e.b + e.o0;
        for (int64_t w = 0; w < e.WO; ++w) {
            const int32_t* __restrict__ s = e.S + w * e.ldS;
            uint8_t* __restrict__ yr = y + w * e.O + e.o0;
            for (int64_t o = 0; o < e.OG; ++o) {
                const float m = a[o] * static_cast<float>(s[o]);
                yr[o] = static_cast<uint8_t>(static_cast<int32_t>(round_clamp(m + b[o], flo)));
            }
        }
    }
}

void epilogue_generic(const Epi& e) { epilogue_body(e); }
#if defined(ADDERCONV_X86)
// AVX2: the requantising and residual epilogues written out, 8 channels at a time (GCC's version of epilogue_body
// runs 16-byte vectors and blends, a quarter of a 16-channel layer's time). The same float32 operations in the same
// order as epilogue_body, whose scalar code takes the last OG % 8 channels; the rounding is vcvtps2dq's (half to even,
// the default MXCSR mode the magic-number rounding assumes too), with the clamps moved where they give the same
// integers: clamping to integer bounds commutes with rounding, and adding the integer zero point after it is exact.
__attribute__((target("avx2"))) inline void store8_u8(uint8_t* p, __m256i codes) {   // saturates to [0, 255]
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
}

__attribute__((target("avx2"))) void epilogue_avx2(const Epi& e) {
    const int64_t o8 = e.OG & ~int64_t(7);
    if ((e.mode != 2 && e.mode != 3) || o8 == 0) return epilogue_body(e);
    const __m256 zero = _mm256_setzero_ps(), lo = _mm256_set1_ps(static_cast<float>(e.lo));
    const __m256 hi = _mm256_set1_ps(255.0f), cmin = _mm256_set1_ps(-1024.0f), cmax = _mm256_set1_ps(1024.0f);
    const __m256 qs = _mm256_set1_ps(e.qs);
    const __m256i qz = _mm256_set1_epi32(static_cast<int32_t>(e.qz));
    const float* a = e.a + e.o0;
    const float* b = e.b + e.o0;
    for (int64_t w = 0; w < e.WO; ++w) {
        const int32_t* s = e.S + w * e.ldS;
        const int64_t at = w * e.O + e.o0;
        for (int64_t o = 0; o < o8; o += 8) {
            const __m256 sv = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + o)));
            __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a + o), sv), _mm256_loadu_ps(b + o));
            if (e.mode == 2) {
                store8_u8(static_cast<uint8_t*>(e.out_row) + at + o,
                          _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi)));
                continue;
            }
            v = _mm256_add_ps(v, _mm256_loadu_ps(e.res + at + o));
            if (e.relu) v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
            _mm256_storeu_ps(static_cast<float*>(e.out_row) + at + o, v);
            if (e.codes_row) {
                const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, qs), cmin), cmax);
                store8_u8(e.codes_row + at + o, _mm256_add_epi32(_mm256_cvtps_epi32(q), qz));
            }
        }
    }
    if (o8 < e.OG) {
        Epi tail = e;
        tail.S += o8;
        tail.o0 += o8;
        tail.OG -= o8;
        epilogue_body(tail);
    }
}

// The residual epilogue for AVX-512: the same float32 operations in the same order as epilogue_body's mode 3.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void epilogue_residual_avx512(const Epi& e) {
    const __m512 magic = _mm512_set1_ps(kMagic), zero = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    const __m512 cmin = _mm512_set1_ps(-1024.0f), cmax = _mm512_set1_ps(1024.0f);
    const __m512 qs = _mm512_set1_ps(e.qs), qz = _mm512_set1_ps(e.qz);
    float* y = static_cast<float*>(e.out_row);
    for (int64_t w = 0; w < e.WO; ++w) {
        const int32_t* s = e.S + w * e.ldS;
        const float* r = e.res + w * e.O + e.o0;
        float* yr = y + w * e.O + e.o0;
        for (int64_t o = 0; o < e.OG; o += 16) {
            const __mmask16 m = e.OG - o >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (e.OG - o)) - 1);
            const __m512 sv = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, s + o));
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, e.a + e.o0 + o), sv);
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e.b + e.o0 + o));
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r + o));
            if (e.relu) v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, zero);
            _mm512_mask_storeu_ps(yr + o, m, v);
            if (e.codes_row) {
                __m512 q = _mm512_div_ps(v, qs);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, cmin, _CMP_LT_OQ), q, cmin);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, cmax, _CMP_GT_OQ), q, cmax);
                q = _mm512_add_ps(_mm512_sub_ps(_mm512_add_ps(q, magic), magic), qz);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, zero, _CMP_LT_OQ), q, zero);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, hi, _CMP_GT_OQ), q, hi);
                _mm_mask_storeu_epi8(e.codes_row + w * e.O + e.o0 + o, m, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q)));
            }
        }
    }
}

// Requantising epilogue written out for AVX-512 (the compiler does not vectorise the narrowing store): the same
// float32 operations in the same order as epilogue_body, 16 channels at a time.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void epilogue_avx512(const Epi& e) {
    if (e.mode == 3) return epilogue_residual_avx512(e);
    if (e.mode != 2) return epilogue_body(e);
    const __m512 magic = _mm512_set1_ps(kMagic), lo = _mm512_set1_ps(static_cast<float>(e.lo));
    const __m512 hi = _mm512_set1_ps(255.0f), cmin = _mm512_set1_ps(-1024.0f), cmax = _mm512_set1_ps(1024.0f);
    uint8_t* y = static_cast<uint8_t*>(e.out_row);
    for (int64_t w = 0; w < e.WO; ++w) {
        const int32_t* s = e.S + w * e.ldS;
        uint8_t* yr = y + w * e.O + e.o0;
        for (int64_t o = 0; o < e.OG; o += 16) {
            const __mmask16 m = e.OG - o >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (e.OG - o)) - 1);
            const __m512 sv = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, s + o));
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, e.a + e.o0 + o), sv);
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e.b + e.o0 + o));
            v = _mm512_min_ps(_mm512_max_ps(v, cmin), cmax);
            v = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            _mm_mask_storeu_epi8(yr + o, m, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
        }
    }
}
#endif

void epilogue(const Epi& e, int isa) {
#if defined(ADDERCONV_X86)
    if (is_avx512(isa)) return epilogue_avx512(e);
    if (isa == AVX2) return epilogue_avx2(e);
#endif
    epilogue_generic(e);
}


// One value of the quantiser: clamp(round_half_even(v / scale) + z, lo, 255) as a float holding an integer.
__attribute__((always_inline)) inline float quantize_one(float v, float scale, float fz, float flo) {
    v = v / scale;   // division, as ONNX QuantizeLinear specifies
    v = v < -1024.0f ? -1024.0f : v;
    v = v > 1024.0f ? 1024.0f : v;
    v = ((v + kMagic) - kMagic) + fz;
    v = v < flo ? flo : v;
    return v > 255.0f ? 255.0f : v;
}

__attribute__((always_inline)) inline void quantize_body(const float* __restrict__ src, uint8_t* __restrict__ dst,
                                                         int64_t n, float scale, float fz, float flo) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(static_cast<int32_t>(quantize_one(src[i], scale, fz, flo)));
}

void quantize_generic(const float* s, uint8_t* d, int64_t n, float i, float z, float l) { quantize_body(s, d, n, i, z, l); }
#if defined(ADDERCONV_X86)
__attribute__((target("avx2"))) void quantize_avx2(const float* s, uint8_t* d, int64_t n, float i, float z, float l) {
    quantize_body(s, d, n, i, z, l);
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantize_avx512(const float* s, uint8_t* d, int64_t n,
                                                                          float i, float z, float l) {
    quantize_body(s, d, n, i, z, l);
}
#endif

}  // namespace

void run(const Geo& g, const Job& job) {
    const uint8_t* X = job.x;
    const uint8_t* Wt = job.w;
    const float* A = job.a;
    const float* Bs = job.b;
    char* Y = static_cast<char*>(job.y);
    const float* R = job.res;
    uint8_t* Cd = job.codes;
    const int64_t esize = job.esize, z = job.z, lo = job.lo, mode = job.mode, qz = job.qz;
    const bool store_float = job.store_float, relu = job.relu;
    const double qscale = job.qscale;
    const int is = job.isa;
    const bool direct = g.CG % 8 == 0;
    const int64_t Kp = g.T * 8, ldS = g.NB * g.L;
    const Plan plan = plan_for(is);

    std::vector<int64_t> offs(g.T);
    if (direct) {
        int64_t t = 0;
        for (int64_t i = 0; i < g.KH; ++i)
            for (int64_t j = 0; j < g.KW; ++j)
                for (int64_t c = 0; c < g.CG; c += 8) offs[t++] = (i * g.DH * g.Wp + j * g.DW) * g.C + c;
    } else {
        for (int64_t t = 0; t < g.T; ++t) offs[t] = t * 8;
    }
    const int64_t tasks = g.N * g.HO * g.G;
    // At least ~4M byte differences (~25 us) per chunk: a batch-1 layer runs on one thread, as waking the
    // others costs more than its work (and far more when the machine is oversubscribed).
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, g.WO * g.OG * g.T * 8));
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
        std::vector<int32_t> S(g.WO * ldS + PMAX * ldS);
        std::vector<uint8_t> patch(direct ? 0 : g.WO * Kp);
        std::vector<float> frow(store_float ? 0 : g.WO * g.O);   // codes only: the float sum of one row, here
        const uint8_t* xptr[PMAX];
        for (int64_t task = begin; task < end; ++task) {
            const int64_t gi = task % g.G, row = task / g.G, oh = row % g.HO, n = row / g.HO;
            const uint8_t* base = X + ((n * g.Hp + oh * g.SH) * g.Wp) * g.C + gi * g.CG;
            if (!direct) {
                std::fill(patch.begin(), patch.end(), static_cast<uint8_t>(z));
                for (int64_t ow = 0; ow < g.WO; ++ow) {
                    uint8_t* dst = patch.data() + ow * Kp;
                    for (int64_t i = 0; i < g.KH; ++i)
                        for (int64_t j = 0; j < g.KW; ++j)
                            std::memcpy(dst + (i * g.KW + j) * g.CG,
                                        base + (i * g.DH * g.Wp + ow * g.SW + j * g.DW) * g.C, g.CG);
                }
            }
            const uint8_t* wg = Wt + gi * g.NB * g.T * g.L * 8;
            for (int64_t b0 = 0; b0 < g.NB; b0 += BMAX) {
                const int nb = static_cast<int>(std::min<int64_t>(BMAX, g.NB - b0));
                const int pmax = std::min(PMAX, std::max(1, plan.accumulators / nb));
                for (int64_t ow = 0; ow < g.WO; ow += pmax) {
                    const int np = static_cast<int>(std::min<int64_t>(pmax, g.WO - ow));
                    for (int q = 0; q < np; ++q)
                        xptr[q] = direct ? base + (ow + q) * g.SW * g.C : patch.data() + (ow + q) * Kp;
                    plan.table[np - 1][nb - 1](xptr, offs.data(), g.T, wg + b0 * g.T * g.L * 8,
                                               S.data() + ow * ldS + b0 * g.L, ldS);
                }
            }
            const int64_t at_row = ((n * g.HO + oh) * g.WO) * g.O;
            epilogue(Epi{S.data(), g.WO, g.OG, ldS, gi * g.OG, g.O, static_cast<int>(mode), A, Bs, lo,
                         store_float ? static_cast<void*>(Y + at_row * esize) : static_cast<void*>(frow.data()),
                         R ? R + at_row : nullptr, relu ? 1 : 0, static_cast<float>(qscale),
                         static_cast<float>(qz), Cd ? Cd + at_row : nullptr}, is);
        }
    });
}

void quantize(const float* src, uint8_t* dst, int64_t n, float sc, float fz, float flo) {
    const int isa = g_isa;
    at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
#if defined(ADDERCONV_X86)
        if (is_avx512(isa)) return quantize_avx512(src + begin, dst + begin, end - begin, sc, fz, flo);
        if (isa == AVX2) return quantize_avx2(src + begin, dst + begin, end - begin, sc, fz, flo);
#endif
        quantize_generic(src + begin, dst + begin, end - begin, sc, fz, flo);
    });
}

int current_isa() { return g_isa; }
void use_isa(int isa) { g_isa = isa; }
int best_isa() { return detect_isa(); }
bool supports_isa(int isa) { return supports(isa); }
int lanes(int isa) { return lanes_of(isa); }

}  // namespace adderconv_int8
