// Direct CPU kernels for the adder convolution: forward and clipped input gradient.
//
// Built on the user's machine at first use (adderconv/kernels/cpu.py: -O3 -march=native), so the vector
// width is the machine's own. No full im2col is materialised. The kernels run on tiles of PB output positions
// and read tile row j (one receptive-field element) at src[off[j] + t] for t in [0, PB); the loops vectorise
// across t, so no reduction is reordered and results do not depend on the vector width. Two tile sources:
//  - stride 1 ("grid"): output (oh, ow) reads padded input (oh + ki*DH, ow + kj*DW). On a grid as wide as the
//    padded input (Wp), position t = oh*Wp + ow reads padded[c][t + ki*DH*Wp + kj*DW]: contiguous in t for
//    every j, so the kernels read straight from a zero-padded band of input rows with nothing unfolded. The
//    grid's Wp - WO extra columns per row are computed and dropped (forward) or carry zero gradient (dX).
//  - any stride ("unfold"): each task unfolds one tile (J x PB values, in cache) and off[j] = j * PB.
//
//   forward:    Y[n,o,p]   = -sum_j |col[j,p] - W[o,j]|  =  2 sum_j min(col, W) - sum_j col - sum_j W
//   grad_input: dcol[j,p]  =  sum_o g[o,p] * clamp(W[o,j] - col[j,p], -1, 1)
//                          =  sum_o g[o,p] * clamp(W[o,j], col - 1, col + 1) - col[j,p] * sum_o g[o,p]
//               then scatter-add into dX (grid: dcol lands in a padded band of dX directly)
// The rewrites save one vector op per element in the inner loops (AVX-512 issues them on two ports only).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

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

template <typename T> struct IntOf;
template <> struct IntOf<float> { using type = int32_t; };
template <> struct IntOf<double> { using type = int64_t; };

template <typename T> struct Vec {
    typedef T vec __attribute__((vector_size(VBYTES)));
    typedef typename IntOf<T>::type I;
    typedef I ivec __attribute__((vector_size(VBYTES)));
    static constexpr int lanes = VBYTES / sizeof(T);
    static constexpr int PB = NVEC * lanes;   // output positions per tile
    static inline vec abs(vec d) {
        ivec m = (ivec)d & std::numeric_limits<I>::max();  // clear the sign bit: one bitwise op
        return (vec)m;
    }
};

struct Geo {
    int64_t N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, G, HO, WO, CG, OG, J, L;
};

struct Buffer {   // one aligned scratch block per task range
    void* p;
    explicit Buffer(size_t bytes) : p(std::aligned_alloc(64, (bytes + 63) / 64 * 64)) {
        if (!p) throw std::bad_alloc();
    }
    ~Buffer() { std::free(p); }
    template <typename T> T* as() { return static_cast<T*>(p); }
};

// Valid output columns [lo, hi) for kernel column offset offw: 0 <= ow*SW + offw < W.
inline void col_range(const Geo& g, int64_t offw, int64_t& lo, int64_t& hi) {
    lo = offw >= 0 ? 0 : (-offw + g.SW - 1) / g.SW;
    hi = g.W - offw <= 0 ? 0 : (g.W - offw + g.SW - 1) / g.SW;
    hi = std::min(hi, g.WO);
    lo = std::min(lo, hi);
}

template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
    using vec = typename Vec<T>::vec;
    constexpr int64_t lanes = Vec<T>::lanes;
    int64_t i = 0;
    for (; i + lanes <= n; i += lanes) {
        vec v;
        std::memcpy(&v, src + i, sizeof(vec));   // unaligned vector load/store, inlined
        std::memcpy(dst + i, &v, sizeof(vec));
    }
    for (; i < n; ++i) dst[i] = src[i];
}

// Tile positions [t, t + n) are output row oh, columns [ow0, ow0 + n).
struct Segment {
    int64_t t, oh, ow0, n;
};

// Splits the tile's positions [p0, p0 + np) into output-row segments; done once per tile, because the walk
// below visits every segment once per tile row (J times) and integer division costs more than the copy.
inline int64_t tile_segments(const Geo& g, int64_t p0, int64_t np, Segment* segs) {
    int64_t k = 0;
    for (int64_t t = 0, p = p0; t < np; ++k) {
        const int64_t oh = p / g.WO, ow0 = p % g.WO, n = std::min(np - t, g.WO - ow0);
        segs[k] = {t, oh, ow0, n};
        t += n;
        p += n;
    }
    return k;
}

// The one walk over a tile of one (sample, group), shared by im2col and col2im: for tile row j and segment s,
// calls f(j, s, base, a, b): output columns [a, b) of the segment read input pixel base + ow * SW (an offset
// into the group's channels); the rest of the segment lies in padding (a == b when all of it does).
template <typename F>
inline void walk_tile(const Geo& g, const Segment* segs, int64_t nseg, F&& f) {
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t ki = 0; ki < g.KH; ++ki)
            for (int64_t kj = 0; kj < g.KW; ++kj) {
                const int64_t j = (c * g.KH + ki) * g.KW + kj;
                const int64_t offh = ki * g.DH - g.PH, offw = kj * g.DW - g.PW;
                int64_t lo, hi;
                col_range(g, offw, lo, hi);
                for (int64_t k = 0; k < nseg; ++k) {
                    const Segment& s = segs[k];
                    const int64_t ih = s.oh * g.SH + offh;
                    int64_t a = std::max(s.ow0, lo), b = std::min(s.ow0 + s.n, hi);
                    if (ih < 0 || ih >= g.H || a >= b) a = b = s.ow0;
                    f(j, s, (c * g.H + ih) * g.W + offw, a, b);
                }
            }
}

// Unfold the tile into col[j * PB + t]; padding and the tail up to PB are zero.
template <typename T>
void im2col_tile(const T* xs, const Geo& g, const Segment* segs, int64_t nseg, int64_t np, int64_t PB, T* col) {
    walk_tile(g, segs, nseg, [&](int64_t j, const Segment& s, int64_t base, int64_t a, int64_t b) {
        T* d = col + j * PB + s.t - s.ow0;   // d[ow] for ow in [ow0, ow0 + n)
        for (int64_t ow = s.ow0; ow < a; ++ow) d[ow] = T(0);
        // rows are short (8-32 pixels): an inline loop, not a memcpy call per row
        if (g.SW == 1) copy_row(d + a, xs + base + a, b - a);
        else for (int64_t ow = a; ow < b; ++ow) d[ow] = xs[base + ow * g.SW];
        for (int64_t ow = b; ow < s.ow0 + s.n; ++ow) d[ow] = T(0);
    });
    for (int64_t j = 0; j < g.J; ++j)
        for (int64_t t = np; t < PB; ++t) col[j * PB + t] = T(0);
}

// Scatter-add dcol[j * PB + t] back into the tile's pixels of dX.
template <typename T>
void col2im_tile(const T* dcol, const Geo& g, const Segment* segs, int64_t nseg, int64_t PB, T* dxs) {
    walk_tile(g, segs, nseg, [&](int64_t j, const Segment& s, int64_t base, int64_t a, int64_t b) {
        const T* src = dcol + j * PB + s.t - s.ow0;
        for (int64_t ow = a; ow < b; ++ow) dxs[base + ow * g.SW] += src[ow];
    });
}

template <typename T>
inline typename Vec<T>::vec loadu(const T* p) {
    typename Vec<T>::vec v;
    std::memcpy(&v, p, sizeof(v));   // an unaligned vector load: grid tiles start anywhere
    return v;
}

template <typename T>
inline void storeu(T* p, typename Vec<T>::vec v) {
    std::memcpy(p, &v, sizeof(v));
}

// Where a tile's results go: tile slots [t, t + n) are output positions [p, p + n) of one H*W plane.
struct Run {
    int64_t t, p, n;
};

// B output channels x NV vectors of positions. |x - w| = x + w - 2 min(x, w), so the inner loop is min + add
// (two vector ops, not three: sub, abs, add); sum_j x (shared by all channels) and sum_j w are added at the end.
template <typename T, int B, int NV>
inline void forward_block(const T* src, const int64_t* off, const T* sx, const T* w, const T* sw, int64_t J,
                          T* out) {
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
// four) and x[j] * sum_o g[o] (sg, shared by all rows) is subtracted at the end. Rows of a grid tile overlap
// in dst, so each row is added in turn (dst is not restrict).
template <typename T, int B, int NV>
inline void grad_input_block(const T* src, const int64_t* off, const T* gt, const T* sg, const T* w, int64_t J,
                             int64_t OG, T* dst) {
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

// A partial tile runs only the vectors it fills (nv of NVEC): the templates need NV at compile time.
template <typename T, int B, int NV = NVEC, typename... Args>
inline void forward_nv(int nv, Args... args) {
    if constexpr (NV > 1)
        if (nv < NV) return forward_nv<T, B, NV - 1>(nv, args...);
    forward_block<T, B, NV>(args...);
}

template <typename T, int B, int NV = NVEC, typename... Args>
inline void grad_input_nv(int nv, Args... args) {
    if constexpr (NV > 1)
        if (nv < NV) return grad_input_nv<T, B, NV - 1>(nv, args...);
    grad_input_block<T, B, NV>(args...);
}

// One tile of the forward: sum_j x, then every block of output channels, stored through the runs into
// yg (the group's first output plane).
template <typename T>
void forward_tile(const T* src, const int64_t* off, int64_t nt, const Run* runs, int64_t nrun, const T* w,
                  const T* sw, const Geo& g, T* yg, T* sx, T* out) {
    constexpr int64_t PB = Vec<T>::PB, lanes = Vec<T>::lanes;
    const int nv = int((nt + lanes - 1) / lanes);
    for (int64_t t = 0; t < PB; ++t) sx[t] = T(0);
    for (int64_t j = 0; j < g.J; ++j)
        for (int64_t t = 0; t < PB; ++t) sx[t] += src[off[j] + t];
    auto store = [&](int64_t o, int b_count) {
        for (int b = 0; b < b_count; ++b)
            for (int64_t r = 0; r < nrun; ++r)
                std::memcpy(yg + (o + b) * g.L + runs[r].p, out + b * PB + runs[r].t, runs[r].n * sizeof(T));
    };
    int64_t o = 0;
    for (; o + OB <= g.OG; o += OB) {
        forward_nv<T, OB>(nv, src, off, (const T*)sx, w + o * g.J, sw + o, g.J, out);
        store(o, OB);
    }
    for (; o < g.OG; ++o) {
        forward_nv<T, 1>(nv, src, off, (const T*)sx, w + o * g.J, sw + o, g.J, out);
        store(o, 1);
    }
}

// One tile of the input gradient: gather the tile's output gradient (zero where no output lies), then every
// block of tile rows, added into dst[off[j] + t].
template <typename T>
void grad_input_tile(const T* src, const int64_t* off, int64_t nt, const Run* runs, int64_t nrun, const T* grg,
                     const T* w, const Geo& g, T* gt, T* sg, T* dst) {
    constexpr int64_t PB = Vec<T>::PB, lanes = Vec<T>::lanes;
    const int nv = int((nt + lanes - 1) / lanes);
    std::memset(gt, 0, g.OG * PB * sizeof(T));
    for (int64_t o = 0; o < g.OG; ++o)
        for (int64_t r = 0; r < nrun; ++r)
            std::memcpy(gt + o * PB + runs[r].t, grg + o * g.L + runs[r].p, runs[r].n * sizeof(T));
    for (int64_t t = 0; t < PB; ++t) sg[t] = T(0);
    for (int64_t o = 0; o < g.OG; ++o)
        for (int64_t t = 0; t < PB; ++t) sg[t] += gt[o * PB + t];
    int64_t j = 0;
    for (; j + JB <= g.J; j += JB)
        grad_input_nv<T, JB>(nv, src, off + j, (const T*)gt, (const T*)sg, w + j, g.J, g.OG, dst);
    for (; j < g.J; ++j) grad_input_nv<T, 1>(nv, src, off + j, (const T*)gt, (const T*)sg, w + j, g.J, g.OG, dst);
}

// ---- stride 1: tiles read a zero-padded band of input rows (see the top of the file) ----

struct Grid {
    int64_t Wp, R, RB, plane, size;   // padded width; output rows per band; band rows; channel stride; buffer
    std::vector<int64_t> off;         // off[j]: offset of tile row j in the band
};

Grid make_grid(const Geo& g, int64_t PB) {
    Grid b;
    b.Wp = g.W + 2 * g.PW;
    const int64_t nbands = (g.HO * b.Wp + 4 * PB - 1) / (4 * PB);   // about four tiles per band
    b.R = (g.HO + nbands - 1) / nbands;
    b.RB = b.R + (g.KH - 1) * g.DH;
    b.plane = b.RB * b.Wp;
    b.size = g.CG * b.plane + (g.KW - 1) * g.DW + 2 * PB;   // the last tile reads up to PB past the band
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t ki = 0; ki < g.KH; ++ki)
            for (int64_t kj = 0; kj < g.KW; ++kj) b.off.push_back(c * b.plane + ki * g.DH * b.Wp + kj * g.DW);
    return b;
}

// Padded input rows of output rows [r0, r0 + rows) for every channel of one (sample, group).
template <typename T>
void fill_band(const T* xs, const Geo& g, const Grid& b, int64_t r0, int64_t rows, T* band) {
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t i = 0; i < rows + (g.KH - 1) * g.DH; ++i) {
            T* d = band + c * b.plane + i * b.Wp;
            const int64_t ih = r0 - g.PH + i;
            if (ih < 0 || ih >= g.H) {
                std::memset(d, 0, b.Wp * sizeof(T));
                continue;
            }
            std::memset(d, 0, g.PW * sizeof(T));
            std::memcpy(d + g.PW, xs + (c * g.H + ih) * g.W, g.W * sizeof(T));
            std::memset(d + g.PW + g.W, 0, (b.Wp - g.PW - g.W) * sizeof(T));
        }
}

// The band's gradient back into dX (padding dropped); bands overlap by their halo rows, hence +=.
template <typename T>
void flush_band(const T* band, const Geo& g, const Grid& b, int64_t r0, int64_t rows, T* dxs) {
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t i = 0; i < rows + (g.KH - 1) * g.DH; ++i) {
            const int64_t ih = r0 - g.PH + i;
            if (ih < 0 || ih >= g.H) continue;
            const T* s = band + c * b.plane + i * b.Wp + g.PW;
            T* d = dxs + (c * g.H + ih) * g.W;
            for (int64_t k = 0; k < g.W; ++k) d[k] += s[k];
        }
}

// Calls f(t0, nt, runs, nrun) for each tile of a band: slots [0, nt) from grid position t0, and where its
// outputs lie. The last row's extra columns are not part of any tile.
template <typename F>
void band_tiles(const Geo& g, const Grid& b, int64_t r0, int64_t rows, int64_t PB, Run* runs, F&& f) {
    const int64_t nb = (rows - 1) * b.Wp + g.WO;
    for (int64_t t0 = 0; t0 < nb; t0 += PB) {
        const int64_t nt = std::min(PB, nb - t0);
        int64_t nrun = 0;
        for (int64_t t = t0; t < t0 + nt;) {
            const int64_t r = t / b.Wp, q = t % b.Wp;
            if (q < g.WO) {
                const int64_t n = std::min(g.WO - q, t0 + nt - t);
                runs[nrun++] = {t - t0, (r0 + r) * g.WO + q, n};
            }
            t = (r + 1) * b.Wp;
        }
        f(t0, nt, runs, nrun);
    }
}

struct ZeroedBuffer : Buffer {
    ZeroedBuffer(size_t bytes) : Buffer(bytes) { std::memset(p, 0, bytes); }
};

template <typename T>
void forward_grid(const T* x, const T* w, const T* sw, T* y, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const Grid b = make_grid(g, PB);
    const int64_t nbands = (g.HO + b.R - 1) / b.R;
    at::parallel_for(0, g.N * g.G * nbands, 1, [&](int64_t begin, int64_t end) {
        ZeroedBuffer bandbuf(b.size * sizeof(T));   // zeroed once: slots past the rows never hold NaN garbage
        Buffer sxbuf(PB * sizeof(T)), outbuf(OB * PB * sizeof(T));
        T *band = bandbuf.as<T>(), *sx = sxbuf.as<T>(), *out = outbuf.as<T>();
        Run runs[PB];
        for (int64_t item = begin; item < end; ++item) {
            const int64_t bi = item % nbands, ng = item / nbands, gi = ng % g.G, n = ng / g.G;
            const int64_t r0 = bi * b.R, rows = std::min(b.R, g.HO - r0);
            fill_band(x + (n * g.C + gi * g.CG) * g.H * g.W, g, b, r0, rows, band);
            band_tiles(g, b, r0, rows, PB, runs, [&](int64_t t0, int64_t nt, const Run* rs, int64_t nrun) {
                forward_tile(band + t0, b.off.data(), nt, rs, nrun, w + gi * g.OG * g.J, sw + gi * g.OG, g,
                             y + (n * g.O + gi * g.OG) * g.L, sx, out);
            });
        }
    });
}

template <typename T>
void grad_input_grid(const T* gr, const T* x, const T* w, T* dx, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const Grid b = make_grid(g, PB);
    const int64_t nbands = (g.HO + b.R - 1) / b.R;
    // One task per (sample, group): neighbouring bands add into the same rows of dX, so they stay on one thread.
    at::parallel_for(0, g.N * g.G, 1, [&](int64_t begin, int64_t end) {
        ZeroedBuffer bandbuf(b.size * sizeof(T)), dbandbuf(b.size * sizeof(T));
        Buffer gbuf(g.OG * PB * sizeof(T)), sgbuf(PB * sizeof(T));
        T *band = bandbuf.as<T>(), *dband = dbandbuf.as<T>(), *gt = gbuf.as<T>(), *sg = sgbuf.as<T>();
        Run runs[PB];
        for (int64_t ng = begin; ng < end; ++ng) {
            const int64_t gi = ng % g.G, n = ng / g.G, first = (n * g.C + gi * g.CG) * g.H * g.W;
            for (int64_t bi = 0; bi < nbands; ++bi) {
                const int64_t r0 = bi * b.R, rows = std::min(b.R, g.HO - r0);
                fill_band(x + first, g, b, r0, rows, band);
                std::memset(dband, 0, b.size * sizeof(T));
                band_tiles(g, b, r0, rows, PB, runs, [&](int64_t t0, int64_t nt, const Run* rs, int64_t nrun) {
                    grad_input_tile(band + t0, b.off.data(), nt, rs, nrun, gr + (n * g.O + gi * g.OG) * g.L,
                                    w + gi * g.OG * g.J, g, gt, sg, dband + t0);
                });
                flush_band(dband, g, b, r0, rows, dx + first);
            }
        }
    });
}

// ---- any stride: each tile is unfolded into a J x PB block first ----

template <typename T>
void forward_unfold(const T* x, const T* w, const T* sw, T* y, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const int64_t ntiles = (g.L + PB - 1) / PB;
    std::vector<int64_t> off(g.J);
    for (int64_t j = 0; j < g.J; ++j) off[j] = j * PB;
    at::parallel_for(0, g.N * g.G * ntiles, 1, [&](int64_t begin, int64_t end) {
        Buffer colbuf(g.J * PB * sizeof(T)), sxbuf(PB * sizeof(T)), outbuf(OB * PB * sizeof(T));
        T *col = colbuf.as<T>(), *sx = sxbuf.as<T>(), *out = outbuf.as<T>();
        Segment segs[PB];
        for (int64_t item = begin; item < end; ++item) {
            const int64_t tile = item % ntiles, ng = item / ntiles, gi = ng % g.G, n = ng / g.G;
            const int64_t p0 = tile * PB, np = std::min(PB, g.L - p0);
            const int64_t nseg = tile_segments(g, p0, np, segs);
            im2col_tile(x + (n * g.C + gi * g.CG) * g.H * g.W, g, segs, nseg, np, PB, col);
            const Run run{0, p0, np};
            forward_tile(col, off.data(), np, &run, 1, w + gi * g.OG * g.J, sw + gi * g.OG, g,
                         y + (n * g.O + gi * g.OG) * g.L, sx, out);
        }
    });
}

template <typename T>
void grad_input_unfold(const T* gr, const T* x, const T* w, T* dx, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const int64_t ntiles = (g.L + PB - 1) / PB;
    std::vector<int64_t> off(g.J);
    for (int64_t j = 0; j < g.J; ++j) off[j] = j * PB;
    // One task per (sample, group): its tiles scatter-add into overlapping pixels, so they stay on one thread.
    at::parallel_for(0, g.N * g.G, 1, [&](int64_t begin, int64_t end) {
        Buffer colbuf(g.J * PB * sizeof(T)), dcolbuf(g.J * PB * sizeof(T)), gbuf(g.OG * PB * sizeof(T)),
            sgbuf(PB * sizeof(T));
        T *col = colbuf.as<T>(), *dcol = dcolbuf.as<T>(), *gt = gbuf.as<T>(), *sg = sgbuf.as<T>();
        Segment segs[PB];
        for (int64_t ng = begin; ng < end; ++ng) {
            const int64_t gi = ng % g.G, n = ng / g.G, first = (n * g.C + gi * g.CG) * g.H * g.W;
            for (int64_t tile = 0; tile < ntiles; ++tile) {
                const int64_t p0 = tile * PB, np = std::min(PB, g.L - p0);
                const int64_t nseg = tile_segments(g, p0, np, segs);
                im2col_tile(x + first, g, segs, nseg, np, PB, col);
                std::memset(dcol, 0, g.J * PB * sizeof(T));
                const Run run{0, p0, np};
                grad_input_tile(col, off.data(), np, &run, 1, gr + (n * g.O + gi * g.OG) * g.L,
                                w + gi * g.OG * g.J, g, gt, sg, dcol);
                col2im_tile(dcol, g, segs, nseg, PB, dx + first);
            }
        }
    });
}

template <typename T>
void forward_impl(const T* x, const T* w, const T* sw, T* y, const Geo& g) {
    if (g.SH == 1 && g.SW == 1) forward_grid(x, w, sw, y, g);
    else forward_unfold(x, w, sw, y, g);
}

template <typename T>
void grad_input_impl(const T* gr, const T* x, const T* w, T* dx, const Geo& g) {
    if (g.SH == 1 && g.SW == 1) grad_input_grid(gr, x, w, dx, g);
    else grad_input_unfold(gr, x, w, dx, g);
}

Geo make_geo(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d,
             int64_t groups) {
    Geo g{};
    g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3);
    g.O = w.size(0); g.KH = w.size(2); g.KW = w.size(3);
    g.SH = s[0]; g.SW = s[1]; g.PH = p[0]; g.PW = p[1]; g.DH = d[0]; g.DW = d[1]; g.G = groups;
    g.HO = (g.H + 2 * g.PH - g.DH * (g.KH - 1) - 1) / g.SH + 1;
    g.WO = (g.W + 2 * g.PW - g.DW * (g.KW - 1) - 1) / g.SW + 1;
    g.CG = g.C / groups; g.OG = g.O / groups; g.J = g.CG * g.KH * g.KW; g.L = g.HO * g.WO;
    TORCH_CHECK(g.HO > 0 && g.WO > 0, "adder_conv2d: empty output");
    TORCH_CHECK(w.size(1) == g.CG && g.O % groups == 0, "adder_conv2d: channels do not fit groups");
    return g;
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& w, std::vector<int64_t> s, std::vector<int64_t> p,
                   std::vector<int64_t> d, int64_t groups) {
    TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.scalar_type() == w.scalar_type(), "bad inputs");
    const Geo g = make_geo(x, w, s, p, d, groups);
    at::Tensor y = at::empty({g.N, g.O, g.HO, g.WO}, x.options());
    const at::Tensor sw = w.reshape({g.O, g.J}).sum(1).contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_forward", [&] {
        forward_impl<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), sw.data_ptr<scalar_t>(),
                               y.data_ptr<scalar_t>(), g);
    });
    return y;
}

at::Tensor grad_input(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, std::vector<int64_t> s,
                      std::vector<int64_t> p, std::vector<int64_t> d, int64_t groups) {
    TORCH_CHECK(grad.is_contiguous() && x.is_contiguous() && w.is_contiguous(), "bad inputs");
    const Geo g = make_geo(x, w, s, p, d, groups);
    at::Tensor dx = at::zeros_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_grad_input", [&] {
        grad_input_impl<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                  dx.data_ptr<scalar_t>(), g);
    });
    return dx;
}

int vector_bytes() { return VBYTES; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "adder conv forward (direct, tiled)");
    m.def("grad_input", &grad_input, "adder conv clipped input gradient (direct, tiled)");
    m.def("vector_bytes", &vector_bytes, "SIMD width the kernels were built for, in bytes");
}
