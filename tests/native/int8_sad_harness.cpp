// Runs one micro-kernel of adderconv/kernels/int8_sad.h, built freestanding for another CPU and run in an
// emulator by tests/test_int8_neon.py: no C library, so the entry point takes everything in one struct and
// writes its results back into it.
#include "int8_sad.h"

extern "C" {
// The compiler may turn loops into calls of these; there is no C library to provide them.
void* memcpy(void* dst, const void* src, unsigned long n) {
    for (unsigned long i = 0; i < n; ++i) static_cast<char*>(dst)[i] = static_cast<const char*>(src)[i];
    return dst;
}
void* memset(void* dst, int c, unsigned long n) {
    for (unsigned long i = 0; i < n; ++i) static_cast<char*>(dst)[i] = static_cast<char>(c);
    return dst;
}

struct Args {
    const uint8_t* const* xp;   // P input pointers
    const int64_t* offs;        // T chunk offsets
    const uint8_t* w;           // B * T packed weight vectors of the path's lanes
    int32_t* out;               // out[p * ostride + b * lanes + l]
    int64_t T, ostride;
    int32_t isa, P, B;
    int32_t detected, lanes, supported;   // written back: detect_isa(), lanes_of(isa), supports(isa)
};

void run(Args* a) {
    a->detected = detect_isa();
    a->lanes = lanes_of(a->isa);
    a->supported = supports(a->isa) ? 1 : 0;
    if (a->P < 1 || a->P > PMAX || a->B < 1 || a->B > BMAX) return;
    plan_for(a->isa).table[a->P - 1][a->B - 1](a->xp, a->offs, a->T, a->w, a->out, a->ostride);
}
}
