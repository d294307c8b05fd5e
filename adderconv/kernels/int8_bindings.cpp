// The int8 adder kernels' torch side: argument checks, weight packing, padding, output tensors and the Python
// module. The arithmetic is in int8_kernels.cpp (and its micro-kernels in int8_sad.h); the two files compile in
// parallel (adderconv/kernels/int8.py), and this one includes only the torch headers it needs (torch/extension.h
// alone took 26 of the build's 32 s of CPU time).
#include "int8_kernels.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using adderconv_int8::Geo;

Geo make_geo(const at::Tensor& x, int64_t O, int64_t KH, int64_t KW, const std::vector<int64_t>& s,
             const std::vector<int64_t>& p, const std::vector<int64_t>& d, int64_t groups, int isa) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kByte && x.is_contiguous(),
                "adder_conv2d_int8: x must be contiguous uint8 (N, H, W, C)");
    TORCH_CHECK(s.size() == 2 && p.size() == 2 && d.size() == 2, "adder_conv2d_int8: stride/padding/dilation of 2");
    Geo g{};
    g.N = x.size(0); g.H = x.size(1); g.W = x.size(2); g.C = x.size(3);
    g.O = O; g.KH = KH; g.KW = KW; g.SH = s[0]; g.SW = s[1]; g.PH = p[0]; g.PW = p[1]; g.DH = d[0]; g.DW = d[1];
    g.G = groups;
    TORCH_CHECK(groups >= 1 && g.C % groups == 0 && O % groups == 0, "adder_conv2d_int8: channels do not fit groups");
    TORCH_CHECK(g.SH >= 1 && g.SW >= 1 && g.DH >= 1 && g.DW >= 1 && g.PH >= 0 && g.PW >= 0,
                "adder_conv2d_int8: bad stride/padding/dilation");
    TORCH_CHECK(KH >= 1 && KW >= 1 && g.C >= groups, "adder_conv2d_int8: empty kernel");
    g.Hp = g.H + 2 * g.PH; g.Wp = g.W + 2 * g.PW;
    g.HO = (g.Hp - g.DH * (KH - 1) - 1) / g.SH + 1;
    g.WO = (g.Wp - g.DW * (KW - 1) - 1) / g.SW + 1;
    TORCH_CHECK(g.HO > 0 && g.WO > 0, "adder_conv2d_int8: empty output");
    g.CG = g.C / groups; g.OG = O / groups; g.K = KH * KW * g.CG; g.T = (g.K + 7) / 8;
    g.L = adderconv_int8::lanes(isa); g.NB = (g.OG + g.L - 1) / g.L;
    return g;
}

// Packed weights for one ISA's lane count: [G][NB][T][L][8].
at::Tensor pack(const at::Tensor& w, int64_t zero_point, int64_t groups, int64_t isa) {
    TORCH_CHECK(w.dim() == 4 && w.scalar_type() == at::kByte, "pack: weight must be uint8 (O, C/g, kh, kw)");
    const at::Tensor wc = w.permute({0, 2, 3, 1}).contiguous();   // (O, kh, kw, C/g): j = (kh, kw, c)
    const int64_t O = w.size(0), OG = O / groups, K = w.size(1) * w.size(2) * w.size(3), T = (K + 7) / 8;
    const int64_t L = adderconv_int8::lanes(static_cast<int>(isa)), NB = (OG + L - 1) / L;
    at::Tensor out = at::full({groups * NB * T * L * 8}, zero_point, w.options());
    const uint8_t* src = wc.data_ptr<uint8_t>();
    uint8_t* dst = out.data_ptr<uint8_t>();
    for (int64_t o = 0; o < O; ++o) {
        const int64_t gi = o / OG, og = o % OG, b = og / L, l = og % L;
        for (int64_t j = 0; j < K; ++j)
            dst[(((gi * NB + b) * T + j / 8) * L + l) * 8 + j % 8] = src[o * K + j];
    }
    return out;
}

// Padded input (N, Hp, Wp, C), border = zero point; x itself when there is no padding.
at::Tensor padded(const at::Tensor& x, const Geo& g, int64_t z) {
    if (g.PH == 0 && g.PW == 0) return x;
    at::Tensor xp = at::empty({g.N, g.Hp, g.Wp, g.C}, x.options());
    const uint8_t* src = x.data_ptr<uint8_t>();
    uint8_t* dst = xp.data_ptr<uint8_t>();
    const int64_t row = g.Wp * g.C;
    at::parallel_for(0, g.N * g.Hp, std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(1, row)),
                     [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            const int64_t n = r / g.Hp, h = r % g.Hp - g.PH;
            uint8_t* d = dst + r * row;
            if (h < 0 || h >= g.H) {
                std::memset(d, static_cast<int>(z), row);
                continue;
            }
            std::memset(d, static_cast<int>(z), g.PW * g.C);
            std::memcpy(d + g.PW * g.C, src + (n * g.H + h) * g.W * g.C, g.W * g.C);
            std::memset(d + (g.PW + g.W) * g.C, static_cast<int>(z), g.PW * g.C);
        }
    });
    return xp;
}


// The op. Modes 0-2 as the header says; mode 3 (residual) adds ``residual`` (float32 (N, OH, OW, O) contiguous),
// applies a ReLU when ``relu``, returns float32 and, when ``qscale`` > 0, also the uint8 codes of that output on the
// grid (qscale, qz) (the next layers' quantiser, fused: the same codes quantize() would give); without
// ``store_float`` only the codes (the float output is then an empty tensor).
std::vector<at::Tensor> forward_impl(const at::Tensor& x, const at::Tensor& packed, int64_t O, int64_t KH,
                                     int64_t KW, int64_t z, std::vector<int64_t> s, std::vector<int64_t> p,
                                     std::vector<int64_t> d, int64_t groups, const at::Tensor& scale,
                                     const at::Tensor& shift, int64_t mode, int64_t lo, int64_t isa,
                                     const at::Tensor& residual, bool relu, double qscale, int64_t qz,
                                     bool store_float = true) {
    const int is = static_cast<int>(isa < 0 ? adderconv_int8::current_isa() : isa);
    const Geo g = make_geo(x, O, KH, KW, s, p, d, groups, is);
    TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                packed.numel() == g.G * g.NB * g.T * g.L * 8,
                "adder_conv2d_int8: packed weights do not fit this geometry / vector width");
    TORCH_CHECK(mode >= 0 && mode <= 3, "adder_conv2d_int8: mode must be 0, 1, 2 or 3");
    // codes: a zero point or floor outside [0, 255] would wrap (-5 becomes 251) in the uint8 stores. Bad values
    // raise ValueError (TORCH_CHECK_VALUE), as the op's own checks do.
    TORCH_CHECK_VALUE(z >= 0 && z <= 255 && lo >= 0 && lo <= 255,
                "adder_conv2d_int8: the zero point and the clamp floor must be in [0, 255]");
    if (mode > 0) {
        TORCH_CHECK(scale.scalar_type() == at::kFloat && shift.scalar_type() == at::kFloat && scale.numel() == O &&
                        shift.numel() == O && scale.is_contiguous() && shift.is_contiguous(),
                    "adder_conv2d_int8: scale and shift must be contiguous float32 of out_channels");
        const float* a = scale.data_ptr<float>();
        const float* b = shift.data_ptr<float>();
        for (int64_t o = 0; o < O; ++o)   // O values: nothing next to the sums; a NaN would become any code
            TORCH_CHECK_VALUE(std::isfinite(a[o]) && std::isfinite(b[o]),
                        "adder_conv2d_int8: the epilogue's scale and shift must be finite");
    }
    TORCH_CHECK_VALUE(mode != 3 || (std::isfinite(qscale) && qscale >= 0 && qz >= 0 && qz <= 255),
                "adder_conv2d_int8: the codes' scale must be finite and >= 0, their zero point in [0, 255]");
    const auto dtype = mode == 0 ? at::kInt : mode == 2 ? at::kByte : at::kFloat;
    at::Tensor y = store_float ? at::empty({g.N, g.HO, g.WO, g.O}, x.options().dtype(dtype))
                               : at::empty({0}, x.options().dtype(dtype));
    at::Tensor codes;
    const float* R = nullptr;
    uint8_t* Cd = nullptr;
    if (mode == 3) {
        TORCH_CHECK(residual.scalar_type() == at::kFloat && residual.is_contiguous() && residual.dim() == 4 &&
                        residual.size(0) == g.N && residual.size(1) == g.HO && residual.size(2) == g.WO &&
                        residual.size(3) == g.O,
                    "adder_conv2d_int8: the residual must be contiguous float32 (N, OH, OW, O) like the output");
        R = residual.data_ptr<float>();
        TORCH_CHECK(store_float || qscale > 0, "adder_conv2d_int8: a residual layer returns its float sum or codes");
        if (qscale > 0) {
            codes = at::empty({g.N, g.HO, g.WO, g.O}, x.options().dtype(at::kByte));
            Cd = codes.data_ptr<uint8_t>();
        }
    }
    const at::Tensor xp = padded(x, g, z);
    adderconv_int8::Job job{};
    job.x = xp.data_ptr<uint8_t>();
    job.w = packed.data_ptr<uint8_t>();
    job.z = z;
    job.lo = lo;
    job.mode = static_cast<int>(mode);
    job.isa = is;
    job.a = mode > 0 ? scale.data_ptr<float>() : nullptr;
    job.b = mode > 0 ? shift.data_ptr<float>() : nullptr;
    job.y = y.data_ptr();
    job.esize = y.element_size();
    job.store_float = store_float;
    job.res = R;
    job.relu = relu;
    job.qscale = qscale;
    job.qz = qz;
    job.codes = Cd;
    adderconv_int8::run(g, job);
    if (mode == 3) return {y, codes.defined() ? codes : at::empty({0}, x.options().dtype(at::kByte))};
    return {y};
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& packed, int64_t O, int64_t KH, int64_t KW, int64_t z,
                   std::vector<int64_t> s, std::vector<int64_t> p, std::vector<int64_t> d, int64_t groups,
                   const at::Tensor& scale, const at::Tensor& shift, int64_t mode, int64_t lo, int64_t isa) {
    TORCH_CHECK(mode >= 0 && mode <= 2, "adder_conv2d_int8: mode must be 0, 1 or 2");
    return forward_impl(x, packed, O, KH, KW, z, s, p, d, groups, scale, shift, mode, lo, isa, at::Tensor(), false,
                        0.0, 0)[0];
}

std::vector<at::Tensor> forward_residual(const at::Tensor& x, const at::Tensor& packed, int64_t O, int64_t KH,
                                         int64_t KW, int64_t z, std::vector<int64_t> s, std::vector<int64_t> p,
                                         std::vector<int64_t> d, int64_t groups, const at::Tensor& scale,
                                         const at::Tensor& shift, const at::Tensor& residual, bool relu,
                                         double qscale, int64_t qz, bool store_float, int64_t isa) {
    TORCH_CHECK(qz >= 0 && qz <= 255, "adder_conv2d_int8: the codes' zero point must be in [0, 255]");
    return forward_impl(x, packed, O, KH, KW, z, s, p, d, groups, scale, shift, 3, 0, isa, residual, relu, qscale,
                        qz, store_float);
}

// Channels-last quantisation of a float tensor (N, C, H, W) in any memory format:
// q = clamp(round_half_even(x / scale) + z, lo, 255), as torch.round(x / scale) + z then clamp (and ONNX).
at::Tensor quantize(const at::Tensor& x, double scale, int64_t z, int64_t lo) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "quantize: x must be float32 (N, C, H, W)");
    TORCH_CHECK_VALUE(std::isfinite(scale) && scale <= 3.4028234663852886e38 && static_cast<float>(scale) > 0,
                "quantize: the scale must be a finite float32 > 0");
    TORCH_CHECK_VALUE(z >= 0 && z <= 255 && lo >= 0 && lo <= 255,
                      "quantize: the zero point and floor must be in [0, 255]");
    const at::Tensor xc = x.permute({0, 2, 3, 1}).contiguous();   // free when x is channels-last already
    at::Tensor q = at::empty(xc.sizes(), xc.options().dtype(at::kByte));
    const float* src = xc.data_ptr<float>();
    uint8_t* dst = q.data_ptr<uint8_t>();
    const float sc = static_cast<float>(scale), fz = static_cast<float>(z), flo = static_cast<float>(lo);
    adderconv_int8::quantize(src, dst, xc.numel(), sc, fz, flo);
    return q;
}

int64_t get_isa() { return adderconv_int8::current_isa(); }
void set_isa(int64_t isa) {
    TORCH_CHECK(adderconv_int8::supports_isa(static_cast<int>(isa)), "set_isa: this CPU does not support vector path ",
                isa);
    adderconv_int8::use_isa(static_cast<int>(isa));
}
int64_t best_isa() { return adderconv_int8::best_isa(); }
bool supports_isa(int64_t isa) { return adderconv_int8::supports_isa(static_cast<int>(isa)); }
int64_t lanes(int64_t isa) { return adderconv_int8::lanes(static_cast<int>(isa)); }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "int8 adder convolution on channels-last uint8 codes (SAD kernels)");
    m.def("forward_residual", &forward_residual, "the same with a residual added (and ReLU) in the epilogue");
    m.def("pack", &pack, "pack uint8 weight codes for a vector path");
    m.def("quantize", &quantize, "float32 NCHW -> channels-last uint8 codes");
    m.def("get_isa", &get_isa);
    m.def("set_isa", &set_isa);
    m.def("best_isa", &best_isa);
    m.def("supports_isa", &supports_isa);
    m.def("lanes", &lanes);
}
