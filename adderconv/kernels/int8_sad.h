// The SAD micro-kernels of the int8 adder convolution and the choice among them, one per vector path.
//
// Kept apart from int8_kernels.cpp (the torch extension: layout, threading, epilogues) and free of torch and of
// the C library, so the same code also compiles freestanding for other CPUs: tests/native/int8_sad_harness.cpp
// builds it for AArch64 and runs the NEON path in an emulator (tests/test_int8_neon.py). Included by exactly
// one translation unit of each build, hence the anonymous namespace.
#pragma once

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ADDERCONV_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define ADDERCONV_NEON 1
#endif

namespace {

// The codes are the extension's ISA indices (adderconv.kernels.int8.ISAS); new paths take new codes.
enum Isa : int { GENERIC = 0, SSE2 = 1, AVX2 = 2, AVX512 = 3, NEON = 4, AVX512VNNI = 5 };

int detect_isa() {
#if defined(ADDERCONV_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f"))
        return __builtin_cpu_supports("avx512vnni") ? AVX512VNNI : AVX512;
    if (__builtin_cpu_supports("avx2")) return AVX2;
    if (__builtin_cpu_supports("sse2")) return SSE2;
#endif
#if defined(ADDERCONV_NEON)
    return NEON;   // Advanced SIMD is part of every AArch64 CPU
#endif
    return GENERIC;
}

// Whether this CPU can run path ``isa``: generic always; the x86 paths up to the widest one it has; NEON on AArch64.
bool supports(int isa) {
    const int best = detect_isa();
    if (isa == GENERIC) return true;
    if (best == NEON || isa == NEON) return isa == best;
    if (isa == AVX512VNNI) return best == AVX512VNNI;
    return isa >= SSE2 && isa <= (best == AVX512VNNI ? AVX512 : best);
}

// Both AVX-512 paths share the layout, the epilogues and the quantiser; they differ in the accumulation only.
inline bool is_avx512(int isa) { return isa == AVX512 || isa == AVX512VNNI; }

int lanes_of(int isa) { return is_avx512(isa) ? 8 : isa == AVX2 ? 4 : isa == SSE2 || isa == NEON ? 2 : 1; }

inline uint64_t load8(const uint8_t* p) {
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

// One micro-kernel call: P output positions (input pointers xp[p]) x B weight blocks of L channels each.
// out[p * ostride + b * L + l] = sum over the T chunks.
using MicroFn = void (*)(const uint8_t* const* xp, const int64_t* offs, int64_t T, const uint8_t* w,
                         int32_t* out, int64_t ostride);

#if defined(ADDERCONV_X86)
// The AVX-512BW micro-kernel, defined once for its two accumulations (a macro, as a function's target
// attribute cannot depend on a template argument, and an inlined helper would need the wider target):
// ACCUMULATE(acc, sad) is vpaddq without VNNI, and with it vpdpwssd against ones. A SAD lane holds its sum
// (< 2^11) in its low 16-bit word and zeros above, so multiplying the words by 1 and adding pairs into the dword
// lanes adds the sum to each 64-bit lane's low dword and 0 to its high one, as vpaddq does (vpdpwssd does not
// saturate; the sums stay far below 2^31). vpdpwssd runs on a port vpsadbw does not use, where vpaddq competes
// for vpsadbw's: about 5-10% less time per layer on a Sapphire Rapids core, side by side (README, "int8 adder
// inference").
#define ADDERCONV_MICRO_AVX512(NAME, TARGET, ACCUMULATE)                                                        \
    template <int P, int B>                                                                                     \
    __attribute__((target(TARGET))) void NAME(const uint8_t* const* xp, const int64_t* offs, int64_t T,         \
                                              const uint8_t* w, int32_t* out, int64_t ostride) {                \
        __m512i acc[P][B];                                                                                      \
        for (int p = 0; p < P; ++p)                                                                             \
            for (int b = 0; b < B; ++b) acc[p][b] = _mm512_setzero_si512();                                     \
        for (int64_t t = 0; t < T; ++t) {                                                                       \
            const int64_t off = offs[t];                                                                        \
            __m512i xv[P];                                                                                      \
            for (int p = 0; p < P; ++p) xv[p] = _mm512_set1_epi64(static_cast<long long>(load8(xp[p] + off)));  \
            for (int b = 0; b < B; ++b) {                                                                       \
                const __m512i wv = _mm512_loadu_si512(reinterpret_cast<const void*>(w + (b * T + t) * 64));     \
                for (int p = 0; p < P; ++p) acc[p][b] = ACCUMULATE(acc[p][b], _mm512_sad_epu8(xv[p], wv));      \
            }                                                                                                   \
        }                                                                                                       \
        for (int p = 0; p < P; ++p)                                                                             \
            for (int b = 0; b < B; ++b)                                                                         \
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p * ostride + b * 8),                      \
                                    _mm512_cvtepi64_epi32(acc[p][b]));                                          \
    }

#define ADDERCONV_DPWSSD_ONES(acc, sad) _mm512_dpwssd_epi32(acc, sad, _mm512_set1_epi16(1))
ADDERCONV_MICRO_AVX512(micro_avx512, "avx512f,avx512bw", _mm512_add_epi64)
ADDERCONV_MICRO_AVX512(micro_avx512vnni, "avx512f,avx512bw,avx512vnni", ADDERCONV_DPWSSD_ONES)
#undef ADDERCONV_DPWSSD_ONES
#undef ADDERCONV_MICRO_AVX512

template <int P, int B>
__attribute__((target("avx2"))) void micro_avx2(const uint8_t* const* xp, const int64_t* offs, int64_t T,
                                                const uint8_t* w, int32_t* out, int64_t ostride) {
    __m256i acc[P][B];
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b) acc[p][b] = _mm256_setzero_si256();
    for (int64_t t = 0; t < T; ++t) {
        const int64_t off = offs[t];
        __m256i xv[P];
        for (int p = 0; p < P; ++p) xv[p] = _mm256_set1_epi64x(static_cast<long long>(load8(xp[p] + off)));
        for (int b = 0; b < B; ++b) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (b * T + t) * 32));
            for (int p = 0; p < P; ++p) acc[p][b] = _mm256_add_epi64(acc[p][b], _mm256_sad_epu8(xv[p], wv));
        }
    }
    // The sums sit in the low dwords of the 64-bit lanes: two blocks' 8 sums go out in one store (shufps picks the
    // low dwords of both, vpermq puts their halves in order), an odd last block alone.
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    for (int p = 0; p < P; ++p) {
        int b = 0;
        for (; b + 1 < B; b += 2) {
            const __m256 lo = _mm256_shuffle_ps(_mm256_castsi256_ps(acc[p][b]), _mm256_castsi256_ps(acc[p][b + 1]),
                                                _MM_SHUFFLE(2, 0, 2, 0));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p * ostride + b * 4),
                                _mm256_permute4x64_epi64(_mm256_castps_si256(lo), _MM_SHUFFLE(3, 1, 2, 0)));
        }
        if (b < B)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + p * ostride + b * 4),
                             _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(acc[p][b], even)));
    }
}

template <int P, int B>
__attribute__((target("sse2"))) void micro_sse2(const uint8_t* const* xp, const int64_t* offs, int64_t T,
                                                const uint8_t* w, int32_t* out, int64_t ostride) {
    __m128i acc[P][B];
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b) acc[p][b] = _mm_setzero_si128();
    for (int64_t t = 0; t < T; ++t) {
        const int64_t off = offs[t];
        __m128i xv[P];
        for (int p = 0; p < P; ++p) xv[p] = _mm_set1_epi64x(static_cast<long long>(load8(xp[p] + off)));
        for (int b = 0; b < B; ++b) {
            const __m128i wv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (b * T + t) * 16));
            for (int p = 0; p < P; ++p) acc[p][b] = _mm_add_epi64(acc[p][b], _mm_sad_epu8(xv[p], wv));
        }
    }
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b)
            _mm_storel_epi64(reinterpret_cast<__m128i*>(out + p * ostride + b * 2),
                             _mm_shuffle_epi32(acc[p][b], _MM_SHUFFLE(3, 1, 2, 0)));
}
#endif

#if defined(ADDERCONV_NEON)
// NEON has no sum-of-absolute-differences into a wide lane: |x - w| of 16 bytes (vabdq_u8) is added pairwise into
// eight u16 lanes (vpadalq_u8), four per output channel. A step adds at most 2 * 255 to a lane, so every 128 steps
// (65280 at most) the u16 lanes are widened into u32 ones (vpadalq_u16) before they could overflow. Weights are
// packed as for SSE2: L = 2 channels of 8 bytes per 16-byte vector.
template <int P, int B>
void micro_neon(const uint8_t* const* xp, const int64_t* offs, int64_t T, const uint8_t* w, int32_t* out,
                int64_t ostride) {
    uint32x4_t acc[P][B];
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b) acc[p][b] = vdupq_n_u32(0);
    for (int64_t t0 = 0; t0 < T; t0 += 128) {
        const int64_t t1 = T - t0 < 128 ? T : t0 + 128;
        uint16x8_t part[P][B];
        for (int p = 0; p < P; ++p)
            for (int b = 0; b < B; ++b) part[p][b] = vdupq_n_u16(0);
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t off = offs[t];
            uint8x16_t xv[P];
            for (int p = 0; p < P; ++p) xv[p] = vreinterpretq_u8_u64(vdupq_n_u64(load8(xp[p] + off)));
            for (int b = 0; b < B; ++b) {
                const uint8x16_t wv = vld1q_u8(w + (b * T + t) * 16);
                for (int p = 0; p < P; ++p) part[p][b] = vpadalq_u8(part[p][b], vabdq_u8(xv[p], wv));
            }
        }
        for (int p = 0; p < P; ++p)
            for (int b = 0; b < B; ++b) acc[p][b] = vpadalq_u16(acc[p][b], part[p][b]);
    }
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b) {
            const uint32x4_t s = vpaddq_u32(acc[p][b], acc[p][b]);   // lanes 0, 1: channels 0, 1
            vst1_s32(out + p * ostride + b * 2, vreinterpret_s32_u32(vget_low_u32(s)));
        }
}
#endif

// Scalar, portable C++ (L = 1: the packed row of a channel is its K bytes plus the zero-point tail).
template <int P, int B>
void micro_generic(const uint8_t* const* xp, const int64_t* offs, int64_t T, const uint8_t* w, int32_t* out,
                   int64_t ostride) {
    for (int p = 0; p < P; ++p)
        for (int b = 0; b < B; ++b) {
            const uint8_t* wb = w + b * T * 8;
            int32_t s = 0;
            for (int64_t t = 0; t < T; ++t) {
                const uint8_t* xc = xp[p] + offs[t];
                for (int k = 0; k < 8; ++k) {
                    const int d = int(xc[k]) - int(wb[t * 8 + k]);
                    s += d < 0 ? -d : d;
                }
            }
            out[p * ostride + b] = s;
        }
}

constexpr int PMAX = 8, BMAX = 4;

#define ADDERCONV_ROW(F, P) {&F<P, 1>, &F<P, 2>, &F<P, 3>, &F<P, 4>}
#define ADDERCONV_TABLE(F)                                                                              \
    {ADDERCONV_ROW(F, 1), ADDERCONV_ROW(F, 2), ADDERCONV_ROW(F, 3), ADDERCONV_ROW(F, 4),                \
     ADDERCONV_ROW(F, 5), ADDERCONV_ROW(F, 6), ADDERCONV_ROW(F, 7), ADDERCONV_ROW(F, 8)}

const MicroFn kGeneric[PMAX][BMAX] = ADDERCONV_TABLE(micro_generic);
#if defined(ADDERCONV_X86)
const MicroFn kSse2[PMAX][BMAX] = ADDERCONV_TABLE(micro_sse2);
const MicroFn kAvx2[PMAX][BMAX] = ADDERCONV_TABLE(micro_avx2);
const MicroFn kAvx512[PMAX][BMAX] = ADDERCONV_TABLE(micro_avx512);
const MicroFn kAvx512Vnni[PMAX][BMAX] = ADDERCONV_TABLE(micro_avx512vnni);
#endif
#if defined(ADDERCONV_NEON)
const MicroFn kNeon[PMAX][BMAX] = ADDERCONV_TABLE(micro_neon);
#endif

struct Plan {
    const MicroFn (*table)[BMAX];
    int accumulators;   // P * B at most: what the register file holds beside the operands
};

Plan plan_for(int isa) {
#if defined(ADDERCONV_X86)
    if (isa == AVX512VNNI) return {kAvx512Vnni, 16};
    if (isa == AVX512) return {kAvx512, 16};   // 32 zmm: 16 accumulators + up to 8 broadcasts + 1 weight
    if (isa == AVX2) return {kAvx2, 12};       // 16 ymm: 12 accumulators + 3 broadcasts + 1 weight (P = 3, B = 4)
    if (isa == SSE2) return {kSse2, 8};        // 16 xmm
#endif
#if defined(ADDERCONV_NEON)
    if (isa == NEON) return {kNeon, 8};        // 32 q registers: 8 u32 + 8 u16 accumulators + broadcasts + 1 weight
#endif
    return {kGeneric, 8};
}

}  // namespace
