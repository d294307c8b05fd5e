// Direct CPU kernels for the adder convolution: forward and clipped input gradient.
//
// Built on the user's machine at first use (adderconv/kernels/cpu.py: -O3 -march=native), so the vector
// width is the machine's own. No full im2col is materialised: each task unfolds one tile of PB output
// positions (J x PB values, a few KiB, in L1/L2) and runs a register-blocked loop over it; the tile is
// reused by every output channel (forward) or every input-gradient row (backward). The loops vectorise across
// output positions, so no reduction is reordered and results do not depend on the vector width.
//
//   forward:    Y[n,o,p]   = -sum_j |col[j,p] - W[o,j]|  =  2 sum_j min(col, W) - sum_j col - sum_j W
//   grad_input: dcol[j,p]  =  sum_o g[o,p] * clamp(W[o,j] - col[j,p], -1, 1)
//                          =  sum_o g[o,p] * clamp(W[o,j], col - 1, col + 1) - col[j,p] * sum_o g[o,p]
//               then col2im (scatter-add into dX)
// The rewrites save one vector op per element in the inner loops (AVX-512 issues them on two ports only).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

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

// Unfold positions [p0, p0+np) of one (sample, group) into col[j * PB + t]; the tail up to PB is zero.
template <typename T>
void im2col_tile(const T* xs, const Geo& g, int64_t p0, int64_t np, int64_t PB, T* col) {
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t ki = 0; ki < g.KH; ++ki)
            for (int64_t kj = 0; kj < g.KW; ++kj) {
                T* dst = col + ((c * g.KH + ki) * g.KW + kj) * PB;
                const T* xc = xs + c * g.H * g.W;
                const int64_t offh = ki * g.DH - g.PH, offw = kj * g.DW - g.PW;
                int64_t lo, hi;
                col_range(g, offw, lo, hi);
                for (int64_t t = 0, p = p0; t < np;) {
                    const int64_t oh = p / g.WO, ow0 = p % g.WO, n_row = std::min(np - t, g.WO - ow0);
                    const int64_t ih = oh * g.SH + offh;
                    T* d = dst + t - ow0;   // d[ow] for ow in [ow0, ow0 + n_row)
                    const int64_t a = std::max(ow0, lo), b = std::min(ow0 + n_row, hi);
                    if (ih < 0 || ih >= g.H || a >= b) {
                        for (int64_t ow = ow0; ow < ow0 + n_row; ++ow) d[ow] = T(0);
                    } else {
                        const T* xr = xc + ih * g.W + offw;
                        for (int64_t ow = ow0; ow < a; ++ow) d[ow] = T(0);
                        // rows are short (8-32 pixels): an inline loop, not a memcpy call per row
                        if (g.SW == 1) copy_row(d + a, xr + a, b - a);
                        else for (int64_t ow = a; ow < b; ++ow) d[ow] = xr[ow * g.SW];
                        for (int64_t ow = b; ow < ow0 + n_row; ++ow) d[ow] = T(0);
                    }
                    t += n_row;
                    p += n_row;
                }
                for (int64_t t = np; t < PB; ++t) dst[t] = T(0);
            }
}

// Scatter-add dcol[j * PB + t] for positions [p0, p0+np) back into one (sample, group) of dX.
template <typename T>
void col2im_tile(const T* dcol, const Geo& g, int64_t p0, int64_t np, int64_t PB, T* dxs) {
    for (int64_t c = 0; c < g.CG; ++c)
        for (int64_t ki = 0; ki < g.KH; ++ki)
            for (int64_t kj = 0; kj < g.KW; ++kj) {
                const T* src = dcol + ((c * g.KH + ki) * g.KW + kj) * PB;
                T* dc = dxs + c * g.H * g.W;
                const int64_t offh = ki * g.DH - g.PH, offw = kj * g.DW - g.PW;
                int64_t lo, hi;
                col_range(g, offw, lo, hi);
                for (int64_t t = 0, p = p0; t < np;) {
                    const int64_t oh = p / g.WO, ow0 = p % g.WO, n_row = std::min(np - t, g.WO - ow0);
                    const int64_t ih = oh * g.SH + offh;
                    const T* s = src + t - ow0;
                    const int64_t a = std::max(ow0, lo), b = std::min(ow0 + n_row, hi);
                    if (ih >= 0 && ih < g.H && a < b) {
                        T* dr = dc + ih * g.W + offw;
                        for (int64_t ow = a; ow < b; ++ow) dr[ow * g.SW] += s[ow];
                    }
                    t += n_row;
                    p += n_row;
                }
            }
}

// B output channels x PB positions. |x - w| = x + w - 2 min(x, w), so the inner loop is min + add (two
// vector ops, not three: sub, abs, add); sum_j x (shared by all channels) and sum_j w are added at the end.
template <typename T, int B>
inline void forward_block(const T* col, const T* sx, const T* w, const T* sw, int64_t J, T* y, int64_t ystride,
                          int64_t np) {
    using V = Vec<T>;
    using vec = typename V::vec;
    constexpr int PB = V::PB;
    vec acc[B][NVEC];
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NVEC; ++v) acc[b][v] = vec{};
    for (int64_t j = 0; j < J; ++j) {
        const vec* cj = reinterpret_cast<const vec*>(col + j * PB);
        vec c[NVEC];
        for (int v = 0; v < NVEC; ++v) c[v] = cj[v];
        for (int b = 0; b < B; ++b) {
            const T wb = w[b * J + j];
            for (int v = 0; v < NVEC; ++v) acc[b][v] += c[v] < wb ? c[v] : wb;
        }
    }
    const vec* sxv = reinterpret_cast<const vec*>(sx);
    for (int b = 0; b < B; ++b) {
        alignas(64) T out[PB];
        for (int v = 0; v < NVEC; ++v) reinterpret_cast<vec*>(out)[v] = (acc[b][v] + acc[b][v]) - sxv[v] - sw[b];
        std::memcpy(y + b * ystride, out, np * sizeof(T));
    }
}

// B tile rows x PB positions: dcol[j] = sum_o g[o] * clamp(w[o, j] - x[j], -1, 1). Since
// clamp(w - x, -1, 1) = clamp(w, x - 1, x + 1) - x, the inner loop is min, max, fma (three vector ops, not
// four) and x[j] * sum_o g[o] (sg, shared by all rows) is subtracted at the end.
template <typename T, int B>
inline void grad_input_block(const T* col, const T* gt, const T* sg, const T* w, int64_t J, int64_t OG, T* dcol) {
    using V = Vec<T>;
    using vec = typename V::vec;
    constexpr int PB = V::PB;
    vec acc[B][NVEC], hi[B][NVEC], lo[B][NVEC];
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NVEC; ++v) {
            const vec c = reinterpret_cast<const vec*>(col + b * PB)[v];
            acc[b][v] = vec{};
            hi[b][v] = c + T(1);
            lo[b][v] = c - T(1);
        }
    for (int64_t o = 0; o < OG; ++o) {
        const vec* go = reinterpret_cast<const vec*>(gt + o * PB);
        vec gv[NVEC];
        for (int v = 0; v < NVEC; ++v) gv[v] = go[v];
        for (int b = 0; b < B; ++b) {
            const T wb = w[o * J + b];
            for (int v = 0; v < NVEC; ++v) {
                vec d = wb < hi[b][v] ? wb : hi[b][v];
                d = d > lo[b][v] ? d : lo[b][v];
                acc[b][v] += gv[v] * d;
            }
        }
    }
    const vec* sgv = reinterpret_cast<const vec*>(sg);
    for (int b = 0; b < B; ++b)
        for (int v = 0; v < NVEC; ++v) {
            const vec c = reinterpret_cast<const vec*>(col + b * PB)[v];
            reinterpret_cast<vec*>(dcol + b * PB)[v] = acc[b][v] - c * sgv[v];
        }
}

// sums[t] = sum_r rows[r * PB + t]
template <typename T>
inline void column_sums(const T* rows, int64_t R, int64_t PB, T* sums) {
    for (int64_t t = 0; t < PB; ++t) sums[t] = T(0);
    for (int64_t r = 0; r < R; ++r)
        for (int64_t t = 0; t < PB; ++t) sums[t] += rows[r * PB + t];
}

template <typename T>
void forward_impl(const T* x, const T* w, const T* sw, T* y, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const int64_t ntiles = (g.L + PB - 1) / PB;
    at::parallel_for(0, g.N * g.G * ntiles, 1, [&](int64_t begin, int64_t end) {
        Buffer colbuf(g.J * PB * sizeof(T)), sxbuf(PB * sizeof(T));
        T *col = colbuf.as<T>(), *sx = sxbuf.as<T>();
        for (int64_t item = begin; item < end; ++item) {
            const int64_t tile = item % ntiles, ng = item / ntiles, gi = ng % g.G, n = ng / g.G;
            const int64_t p0 = tile * PB, np = std::min(PB, g.L - p0);
            im2col_tile(x + (n * g.C + gi * g.CG) * g.H * g.W, g, p0, np, PB, col);
            column_sums(col, g.J, PB, sx);
            const T* wg = w + gi * g.OG * g.J;
            const T* swg = sw + gi * g.OG;
            T* yg = y + (n * g.O + gi * g.OG) * g.L + p0;
            int64_t o = 0;
            for (; o + OB <= g.OG; o += OB)
                forward_block<T, OB>(col, sx, wg + o * g.J, swg + o, g.J, yg + o * g.L, g.L, np);
            for (; o < g.OG; ++o) forward_block<T, 1>(col, sx, wg + o * g.J, swg + o, g.J, yg + o * g.L, g.L, np);
        }
    });
}

template <typename T>
void grad_input_impl(const T* gr, const T* x, const T* w, T* dx, const Geo& g) {
    constexpr int64_t PB = Vec<T>::PB;
    const int64_t ntiles = (g.L + PB - 1) / PB;
    // One task per (sample, group): its tiles scatter-add into overlapping pixels, so they stay on one thread.
    at::parallel_for(0, g.N * g.G, 1, [&](int64_t begin, int64_t end) {
        Buffer colbuf(g.J * PB * sizeof(T)), dcolbuf(g.J * PB * sizeof(T)), gbuf(g.OG * PB * sizeof(T)),
            sgbuf(PB * sizeof(T));
        T *col = colbuf.as<T>(), *dcol = dcolbuf.as<T>(), *gt = gbuf.as<T>(), *sg = sgbuf.as<T>();
        for (int64_t ng = begin; ng < end; ++ng) {
            const int64_t gi = ng % g.G, n = ng / g.G;
            const T* xs = x + (n * g.C + gi * g.CG) * g.H * g.W;
            T* dxs = dx + (n * g.C + gi * g.CG) * g.H * g.W;
            const T* wg = w + gi * g.OG * g.J;
            for (int64_t tile = 0; tile < ntiles; ++tile) {
                const int64_t p0 = tile * PB, np = std::min(PB, g.L - p0);
                im2col_tile(xs, g, p0, np, PB, col);
                for (int64_t o = 0; o < g.OG; ++o) {
                    std::memcpy(gt + o * PB, gr + (n * g.O + gi * g.OG + o) * g.L + p0, np * sizeof(T));
                    for (int64_t t = np; t < PB; ++t) gt[o * PB + t] = T(0);
                }
                column_sums(gt, g.OG, PB, sg);
                int64_t j = 0;
                for (; j + JB <= g.J; j += JB)
                    grad_input_block<T, JB>(col + j * PB, gt, sg, wg + j, g.J, g.OG, dcol + j * PB);
                for (; j < g.J; ++j) grad_input_block<T, 1>(col + j * PB, gt, sg, wg + j, g.J, g.OG, dcol + j * PB);
                col2im_tile(dcol, g, p0, np, PB, dxs);
            }
        }
    });
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
