// The float adder kernels' torch side: argument checks, output tensors, dtype dispatch and the Python module.
// The loops are in cpu_kernels.cpp; the two files compile in parallel (adderconv/kernels/cpu.py), and this one
// includes only the torch headers it needs (torch/extension.h alone took 26 of the build's 29 s of CPU time).
#include "cpu_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <vector>

namespace {

using adderconv_cpu::Geo;

// Every argument is checked here too, though the op (adderconv/ops.py) checks them before any kernel: a negative
// stride or dilation walks the band's pointers out of their buffers, a zero one divides by zero, a short list
// is read past its end, a gradient of another shape is read out of bounds.
Geo make_geo(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d,
             int64_t groups) {
    TORCH_CHECK(x.dim() == 4 && w.dim() == 4, "adder_conv2d: input and weight must be 4-d");
    TORCH_CHECK(x.is_contiguous() && w.is_contiguous(), "adder_conv2d: input and weight must be contiguous");
    TORCH_CHECK(x.scalar_type() == w.scalar_type() && at::isFloatingType(x.scalar_type()),
                "adder_conv2d: input and weight must be floating point of one dtype");
    TORCH_CHECK(s.size() == 2 && p.size() == 2 && d.size() == 2, "adder_conv2d: stride/padding/dilation of 2");
    TORCH_CHECK(s[0] >= 1 && s[1] >= 1 && d[0] >= 1 && d[1] >= 1 && p[0] >= 0 && p[1] >= 0,
                "adder_conv2d: stride and dilation must be >= 1, padding >= 0");
    TORCH_CHECK(groups >= 1, "adder_conv2d: groups must be >= 1");
    Geo g{};
    g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3);
    g.O = w.size(0); g.KH = w.size(2); g.KW = w.size(3);
    TORCH_CHECK(w.size(1) >= 1 && g.KH >= 1 && g.KW >= 1, "adder_conv2d: empty kernel");
    TORCH_CHECK(g.C % groups == 0 && w.size(1) == g.C / groups && g.O % groups == 0,
                "adder_conv2d: channels do not fit groups");
    g.SH = s[0]; g.SW = s[1]; g.PH = p[0]; g.PW = p[1]; g.DH = d[0]; g.DW = d[1]; g.G = groups;
    g.HO = (g.H + 2 * g.PH - g.DH * (g.KH - 1) - 1) / g.SH + 1;
    g.WO = (g.W + 2 * g.PW - g.DW * (g.KW - 1) - 1) / g.SW + 1;
    TORCH_CHECK(g.H + 2 * g.PH >= g.DH * (g.KH - 1) + 1 && g.W + 2 * g.PW >= g.DW * (g.KW - 1) + 1,
                "adder_conv2d: the kernel is larger than the padded input");
    g.CG = g.C / groups; g.OG = g.O / groups; g.J = g.CG * g.KH * g.KW; g.L = g.HO * g.WO;
    TORCH_CHECK(g.HO > 0 && g.WO > 0, "adder_conv2d: empty output");
    return g;
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& w, std::vector<int64_t> s, std::vector<int64_t> p,
                   std::vector<int64_t> d, int64_t groups) {
    const Geo g = make_geo(x, w, s, p, d, groups);
    at::Tensor y = at::empty({g.N, g.O, g.HO, g.WO}, x.options());
    const at::Tensor sw = w.reshape({g.O, g.J}).sum(1).contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_forward", [&] {
        adderconv_cpu::forward_impl<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), sw.data_ptr<scalar_t>(),
                               y.data_ptr<scalar_t>(), g);
    });
    return y;
}

at::Tensor grad_input(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, std::vector<int64_t> s,
                      std::vector<int64_t> p, std::vector<int64_t> d, int64_t groups) {
    const Geo g = make_geo(x, w, s, p, d, groups);
    TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == x.scalar_type() && grad.dim() == 4 &&
                    grad.size(0) == g.N && grad.size(1) == g.O && grad.size(2) == g.HO && grad.size(3) == g.WO,
                "adder_conv2d: the output gradient must be contiguous (N, O, HO, WO) of the input's dtype");
    at::Tensor dx = at::zeros_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "adder_grad_input", [&] {
        adderconv_cpu::grad_input_impl<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                  dx.data_ptr<scalar_t>(), g);
    });
    return dx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "adder conv forward (direct, tiled)");
    m.def("grad_input", &grad_input, "adder conv clipped input gradient (direct, tiled)");
    m.def("vector_bytes", &adderconv_cpu::vector_bytes, "SIMD width the kernels were built for, in bytes");
}
