// Direct CPU kernels for the adder convolution: forward and clipped input gradient.
//
// Built on the user's machine at first use (adderconv/kernels/cpu.py: -O3 -march=native), so the vector
// width is the machine's own. This file is the arithmetic only (no torch headers, so it compiles in seconds, in
// parallel with cpu_bindings.cpp: the tensor checks and the Python module). Nothing is unfolded in full. Output (oh, ow) reads padded input row
// oh*SH + ki*DH, column ow*SW + kj*DW. Each task copies a band of input rows into KW x SH planes per channel:
// plane (a, kj) holds, at (i, ow), padded pixel (i*SH + a, ow*SW + kj*DW). Receptive-field element
// j = (c, ki, kj) of output position t = oh*WO + ow is then plane (c, (ki*DH) % SH, kj) at row
// oh + (ki*DH) / SH: band[off[j] + t], contiguous in t. So the kernels load tiles of PB consecutive output
// positions straight from the band (KW times a band of the input: in cache), with no per-row bookkeeping,
// and the input gradient is added into a band of the same shape, then flushed into dX. The loops vectorise
// across t, so no reduction is reordered and results do not depend on the vector width.
//
//   forward:    Y[n,o,p]   = -sum_j |col[j,p] - W[o,j]|  =  2 sum_j min(col, W) - sum_j col - sum_j W
//   grad_input: dcol[j,p]  =  sum_o g[o,p] * clamp(W[o,j] - col[j,p], -1, 1)
//                          =  sum_o g[o,p] * clamp(W[o,j], col - 1, col + 1) - col[j,p] * sum_o g[o,p]
//               then scatter-add into dX (dcol lands in a band of dX directly)
// The rewrites save one vector op per element in the inner loops (AVX-512 issues them on two ports only).
#include "cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

namespace adderconv_cpu {
namespace {
#if defined(__AVX512F__)
constexpr int VBYTES = 64, NVEC = 4;   // 32 zmm registers: 4 x 4 accumulators + operands
#elif defined(__AVX__)
constexpr int VBYTES = 32, NVEC = 2;   // 16 ymm registers
#elif defined(__aarch64__)
constexpr int VBYTES = 16, NVEC = 4;   // NEON: 32 q registers
#else
constexpr int VBYTES = 16, NVEC = 2;   // SSE2 and anything else the compiler maps 16-byte vectors to
#endif
constexpr int OB = 4;                  // output channels per forward micro-block
constexpr int JB = 2;                  // tile rows per input-gradient micro-block
constexpr int64_t OCHUNK = 96;         // at most this many output channels per input-gradient pass (24 KiB tile)

template <typename T> struct Vec {
    typedef T vec __attribute__((vector_size(VBYTES)));
    static constexpr int lanes = VBYTES / sizeof(T);
    static constexpr int PB = NVEC * lanes;   // output positions per tile
};


struct Buffer {   // one aligned scratch block per task range
    void* p;
    explicit Buffer(size_t bytes) : p(std::aligned_alloc(64, (bytes + 63) / 64 * 64)) {
        if (!p) throw std::bad_alloc();
    }
    ~Buffer() { std::free(p); }
    template <typename T> T* as() { return static_cast<T*>(p); }
};

template <typename T>
inline typename Vec<T>::vec loadu(const T* p) {
    typename Vec<T>::vec v;
    std::memcpy(&v, p, sizeof(v));   // an unaligned vector load: tiles start anywhere in the band
    return v;
}

template <typename T>
inline void storeu(T* p, typename Vec<T>::vec v) {
    std::memcpy(p, &v, sizeof(v));
}

// d[k] = s[k] for k < n: rows are short (8-32 values), so an inline vector loop rather than a memcpy call.
template <typename T>
inline void copy_short(T* __restrict d, const T* __restrict s, int64_t n) {
    constexpr int64_t lanes = Vec<T>::lanes;
    int64_t k = 0;
    for (; k + lanes <= n; k += lanes) storeu(d + k, loadu(s + k));
    for (; k < n; ++k) d[k] = s[k];
}

// sums[t] = sum_r row(r)[t] for the tile's PB slots, accumulated in registers.
template <typename T, typename Row>
inline void tile_sums(Row row, int64_t R, T* sums) {
    using V = Vec<T>;
    typename V::vec acc[NVEC] = {};
    for (int64_t r = 0; r < R; ++r) {
        const T* p = row(r);
        for (int v = 0; v < NVEC; ++v) acc[v] += loadu(p + v * V::lanes);
    }
    for (int v = 0; v < NVEC; ++v) storeu(sums + v * V::lanes, acc[v]);
}

// B output channels x NV vectors of positions. |x - w| = x + w - 2 min(x, w), so the inner loop is min + add
// (two vector ops, not three: sub, abs, add); sum_j x (shared by all channels) and sum_j w are added at the end.
template <typename T, int B, int NV>
[[gnu::noinline]] void forward_block(const T* src, const int64_t* off, const T* sx, const T* w, const T* sw,
                                     int64_t J, T* out) {
    using V = Vec<T>;
    using vec = typename V::vec;
    vec acc[B][NV];
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NV; ++v) acc[b][v] = vec{};
    for (int64_t j = 0; j < J; ++j) {
        const T* cj = src + off[j];
        vec c[NV];
        for (int v = 0; v < NV; ++v) c[v] = loadu(cj + v * V::lanes);
        for (int b = 0; b < B; ++b) {
            const T wb = w[b * J + j];
            for (int v = 0; v < NV; ++v) acc[b][v] += c[v] < wb ? c[v] : wb;
        }
    }
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NV; ++v)
            storeu(out + b * V::PB + v * V::lanes, (acc[b][v] + acc[b][v]) - loadu(sx + v * V::lanes) - sw[b]);
}

// B tile rows x NV vectors of positions: dst[off[b] + t] += sum_o g[o] * clamp(w[o, j] - x[j], -1, 1). Since
// clamp(w - x, -1, 1) = clamp(w, x - 1, x + 1) - x, the inner loop is min, max, fma (three vector ops, not
// four) and x[j] * sum_o g[o] (sg, shared by all rows) is subtracted at the end. Rows of a band overlap
// in dst, so each row is added in turn (dst is not restrict).
template <typename T, int B, int NV>
[[gnu::noinline]] void grad_input_block(const T* src, const int64_t* off, const T* gt, const T* sg, const T* w,
                                        int64_t J, int64_t OG, T* dst) {
    using V = Vec<T>;
    using vec = typename V::vec;
    vec acc[B][NV], hi[B][NV], lo[B][NV];
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NV; ++v) {
            const vec c = loadu(src + off[b] + v * V::lanes);
            acc[b][v] = vec{};
            hi[b][v] = c + T(1);
            lo[b][v] = c - T(1);
        }
    for (int64_t o = 0; o < OG; ++o) {
        const T* go = gt + o * V::PB;
        vec gv[NV];
        for (int v = 0; v < NV; ++v) gv[v] = loadu(go + v * V::lanes);
        for (int b = 0; b < B; ++b) {
            const T wb = w[o * J + b];
            for (int v = 0; v < NV; ++v) {
                vec d = wb < hi[b][v] ? wb : hi[b][v];
                d = d > lo[b][v] ? d : lo[b][v];
                acc[b][v] += gv[v] * d;
            }
        }
    }
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NV; ++v) {
            const vec c = loadu(src + off[b] + v * V::lanes);
            T* d = dst + off[b] + v * V::lanes;
            storeu(d, loadu(d) + (acc[b][v] - c * loadu(sg + v * V::lanes)));
        }
}

// A partial tile runs only the vectors it fills (nv of NVEC): calls f(std::integral_constant<int, nv>), since
// the blocks need their vector count at compile time.
template <int NV = NVEC, typename F>
inline void with_nv(int nv, F&& f) {
    if constexpr (NV > 1)
        if (nv < NV) return with_nv<NV - 1>(nv, f);
    f(std::integral_constant<int, NV>{});
}

// One tile of the forward (output positions [p, p + nt) of the group's planes yg): sum_j x, then every block
// of output channels.
template <typename T>
void forward_tile(const T* src, const int64_t* off, int64_t nt, int64_t p, const T* w, const T* sw, const Geo& g,
                  T* yg, T* sx, T* out) {
    constexpr int64_t PB = Vec<T>::PB, lanes = Vec<T>::lanes;
    const int nv = int((nt + lanes - 1) / lanes);
    tile_sums<T>([&](int64_t j) { return src + off[j]; }, g.J, sx);
    int64_t o = 0;
    auto block = [&](auto b) {   // b: output channels per block, as an integral_constant
        with_nv(nv, [&](auto n) {
            forward_block<T, decltype(b)::value, decltype(n)::value>(src, off, sx, w + o * g.J, sw + o, g.J, out);
        });
        for (int k = 0; k < decltype(b)::value; ++k) copy_short(yg + (o + k) * g.L + p, out + k * PB, nt);
    };
    for (; o + OB <= g.OG; o += OB) block(std::integral_constant<int, OB>{});
    for (; o < g.OG; ++o) block(std::integral_constant<int, 1>{});
}

// One tile of the input gradient (output positions [p, p + nt) of the group's gradient planes grg): gather
// the tile's output gradient (zero past nt), then every block of tile rows, added into dst[off[j] + t].
template <typename T>
void grad_input_tile(const T* src, const int64_t* off, int64_t nt, int64_t p, const T* grg, const T* w,
                     const Geo& g, T* gt, T* sg, T* dst) {
    constexpr int64_t PB = Vec<T>::PB, lanes = Vec<T>::lanes;
    const int nv = int((nt + lanes - 1) / lanes);
    std::memset(gt, 0, g.OG * PB * sizeof(T));
    for (int64_t o = 0; o < g.OG; ++o) copy_short(gt + o * PB, grg + o * g.L + p, nt);
    // Output channels in chunks whose gradient tile stays in L1 (the rows' sums are linear in o, so each
    // chunk subtracts x * its own sum); every chunk adds into dst.
    const int64_t nchunks = (g.OG + OCHUNK - 1) / OCHUNK, chunk = (g.OG + nchunks - 1) / nchunks;
    for (int64_t o0 = 0; o0 < g.OG; o0 += chunk) {
        const int64_t oc = std::min(chunk, g.OG - o0);
        const T* gc = gt + o0 * PB;
        const T* wc = w + o0 * g.J;
        tile_sums<T>([&](int64_t o) { return gc + o * PB; }, oc, sg);
        int64_t j = 0;
        auto block = [&](auto b) {   // b: receptive-field elements per block, as an integral_constant
            with_nv(nv, [&](auto n) {
                grad_input_block<T, decltype(b)::value, decltype(n)::value>(src, off + j, gc, sg, wc + j, g.J, oc, dst);
            });
        };
        for (; j + JB <= g.J; j += JB) block(std::integral_constant<int, JB>{});
        for (; j < g.J; ++j) block(std::integral_constant<int, 1>{});
    }
}

// ---- the band: tiles read a zero-padded, phase-split band of input rows (see the top of the file) ----

struct Band {
    int64_t R, count, RB, plane, size;   // output rows per band; bands; band rows per plane; plane; buffer
    std::vector<int64_t> off;     // off[j]: offset of receptive-field element j in the band
};

Band make_band(const Geo& g, int64_t PB) {
    Band b;
    const int64_t nbands = (g.L + 4 * PB - 1) / (4 * PB);   // about four tiles per band
    b.R = (g.HO + nbands - 1) / nbands;
    b.count = (g.HO + b.R - 1) / b.R;
    b.RB = b.R + (g.KH - 1) * g.DH / g.SH;
    b.plane = b.RB * g.WO;
    b.size = g.CG * g.SH * g.KW * b.plane + PB;   // a partial last tile reads up to PB past the band
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t ki = 0; ki < g.KH; ++ki)
            for (int64_t kj = 0; kj < g.KW; ++kj) {
                const int64_t dh = ki * g.DH;
                b.off.push_back(((c * g.SH + dh % g.SH) * g.KW + kj) * b.plane + dh / g.SH * g.WO);
            }
    return b;
}

// Visits the band of output rows [r0, r0 + rows) of one (sample, group): f(pos, c, ih, iw0, n) for each run
// of band slots band[pos + k] <-> pixel (c, ih, iw0 + k * SW), k < n, inside the image (the rest of the band
// is padding). The one walk shared by filling a band from X and flushing a band's gradient into dX.
template <typename F>
void walk_band(const Geo& g, const Band& b, int64_t r0, int64_t rows, F&& f) {
    const int64_t brows = rows + (g.KH - 1) * g.DH / g.SH;
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t a = 0; a < g.SH; ++a)
            for (int64_t kj = 0; kj < g.KW; ++kj) {
                // column ow of plane (a, kj) is image column ow * SW + kj * DW - PW: inside for ow in [q0, q1)
                const int64_t shift = kj * g.DW - g.PW;
                const int64_t q0 = shift >= 0 ? 0 : (-shift + g.SW - 1) / g.SW;
                const int64_t q1 = g.W - shift <= 0 ? 0 : std::min(g.WO, (g.W - shift + g.SW - 1) / g.SW);
                if (q0 >= q1) continue;
                for (int64_t i = 0; i < brows; ++i) {
                    const int64_t ih = (r0 + i) * g.SH + a - g.PH;
                    if (ih < 0 || ih >= g.H) continue;
                    f((((c * g.SH + a) * g.KW + kj) * b.RB + i) * g.WO + q0, c, ih, q0 * g.SW + shift, q1 - q0);
                }
            }
}

template <typename T>
void fill_band(const T* xs, const Geo& g, const Band& b, int64_t r0, int64_t rows, T* band) {
    std::memset(band, 0, (b.size - Vec<T>::PB) * sizeof(T));
    walk_band(g, b, r0, rows, [&](int64_t pos, int64_t c, int64_t ih, int64_t iw0, int64_t n) {
        const T* s = xs + (c * g.H + ih) * g.W + iw0;
        if (g.SW == 1) copy_short(band + pos, s, n);
        else for (int64_t k = 0; k < n; ++k) band[pos + k] = s[k * g.SW];
    });
}

// The band's gradient back into dX (padding dropped); bands overlap by their halo rows, hence +=.
template <typename T>
void flush_band(const T* band, const Geo& g, const Band& b, int64_t r0, int64_t rows, T* dxs) {
    walk_band(g, b, r0, rows, [&](int64_t pos, int64_t c, int64_t ih, int64_t iw0, int64_t n) {
        T* d = dxs + (c * g.H + ih) * g.W + iw0;
        for (int64_t k = 0; k < n; ++k) d[k * g.SW] += band[pos + k];
    });
}

struct ZeroedBuffer : Buffer {
    explicit ZeroedBuffer(size_t bytes) : Buffer(bytes) { std::memset(p, 0, bytes); }
};

}  // namespace

template <typename T>
void forward_impl(const T* x, const T* w, const T* sw, T* y, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const Band b = make_band(g, PB);
    at::parallel_for(0, g.N * g.G * b.count, 1, [&](int64_t begin, int64_t end) {
        ZeroedBuffer bandbuf(b.size * sizeof(T));   // zeroed once: the slots past the band never hold NaN garbage
        Buffer sxbuf(PB * sizeof(T)), outbuf(OB * PB * sizeof(T));
        T *band = bandbuf.as<T>(), *sx = sxbuf.as<T>(), *out = outbuf.as<T>();
        for (int64_t item = begin; item < end; ++item) {
            const int64_t bi = item % b.count, ng = item / b.count, gi = ng % g.G, n = ng / g.G;
            const int64_t r0 = bi * b.R, rows = std::min(b.R, g.HO - r0);
            fill_band(x + (n * g.C + gi * g.CG) * g.H * g.W, g, b, r0, rows, band);
            for (int64_t t0 = 0; t0 < rows * g.WO; t0 += PB)
                forward_tile(band + t0, b.off.data(), std::min(PB, rows * g.WO - t0), r0 * g.WO + t0,
                             w + gi * g.OG * g.J, sw + gi * g.OG, g, y + (n * g.O + gi * g.OG) * g.L, sx, out);
        }
    });
}

template <typename T>
void grad_input_impl(const T* gr, const T* x, const T* w, T* dx, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const Band b = make_band(g, PB);
    // One task per (sample, group): neighbouring bands add into the same rows of dX, so they stay on one thread.
    at::parallel_for(0, g.N * g.G, 1, [&](int64_t begin, int64_t end) {
        ZeroedBuffer bandbuf(b.size * sizeof(T));   // dband needs no zeroing here: it is cleared per band below
        Buffer dbandbuf(b.size * sizeof(T)), gbuf(g.OG * PB * sizeof(T)), sgbuf(PB * sizeof(T));
        T *band = bandbuf.as<T>(), *dband = dbandbuf.as<T>(), *gt = gbuf.as<T>(), *sg = sgbuf.as<T>();
        for (int64_t ng = begin; ng < end; ++ng) {
            const int64_t gi = ng % g.G, n = ng / g.G, first = (n * g.C + gi * g.CG) * g.H * g.W;
            for (int64_t bi = 0; bi < b.count; ++bi) {
                const int64_t r0 = bi * b.R, rows = std::min(b.R, g.HO - r0);
                fill_band(x + first, g, b, r0, rows, band);
                std::memset(dband, 0, b.size * sizeof(T));
                for (int64_t t0 = 0; t0 < rows * g.WO; t0 += PB)
                    grad_input_tile(band + t0, b.off.data(), std::min(PB, rows * g.WO - t0), r0 * g.WO + t0,
                                    gr + (n * g.O + gi * g.OG) * g.L, w + gi * g.OG * g.J, g, gt, sg, dband + t0);
                flush_band(dband, g, b, r0, rows, dx + first);
            }
        }
    });
}

template void forward_impl<float>(const float*, const float*, const float*, float*, const Geo&);
template void forward_impl<double>(const double*, const double*, const double*, double*, const Geo&);
template void grad_input_impl<float>(const float*, const float*, const float*, float*, const Geo&);
template void grad_input_impl<double>(const double*, const double*, const double*, double*, const Geo&);

int vector_bytes() { return VBYTES; }

}  // namespace adderconv_cpu
