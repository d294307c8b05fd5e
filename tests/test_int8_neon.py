"""The NEON path of the int8 adder kernels, run in an AArch64 emulator on any machine.

``adderconv/kernels/int8_sad.h`` (the micro-kernels and the choice among them, free of torch and libc) is built
for AArch64 with zig's clang (the ``ziglang`` wheel) together with ``tests/native/int8_sad_harness.cpp`` and run
under Unicorn (QEMU's CPU emulator, the ``unicorn`` wheel). Its sums are compared exactly with a NumPy integer
reference, on weights packed by the real extension's ``pack`` for the NEON path. The rest of the kernel (layout,
threading, epilogues) is portable C++ shared with the x86 paths and tested there.
"""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adderconv.kernels import int8

unicorn = pytest.importorskip("unicorn", reason="dev dependency: pip install -e '.[dev]'")
pytest.importorskip("ziglang", reason="dev dependency: pip install -e '.[dev]'")
from unicorn import arm64_const as arm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEON, GENERIC, AVX2, VNNI = (int8.ISAS.index(n) for n in ("neon", "generic", "avx2", "avx512vnni"))
_ARGS = struct.Struct("<QQQQqqiiiiii")   # the harness's Args (LP64)
_DATA, _STACK, _STOP, _SIZE = 0x4000_0000, 0x6000_0000, 0x7000_0000, 1 << 24


class AArch64:
    """The harness ELF loaded into Unicorn; :meth:`run` calls its ``run(Args*)`` entry point once."""

    def __init__(self, elf: bytes):
        self.uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
        self.entry, phoff = struct.unpack_from("<QQ", elf, 24)
        phentsize, phnum = struct.unpack_from("<HH", elf, 54)
        for i in range(phnum):
            kind, _, off, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
            if kind != 1:   # PT_LOAD
                continue
            lo, hi = vaddr & ~0xFFF, (vaddr + memsz + 0xFFF) & ~0xFFF
            self.uc.mem_map(lo, hi - lo)
            self.uc.mem_write(vaddr, elf[off:off + filesz])
        for base in (_DATA, _STACK, _STOP):
            self.uc.mem_map(base, _SIZE)
        self.uc.reg_write(arm.UC_ARM64_REG_CPACR_EL1, 3 << 20)   # FPEN: let EL0/EL1 use the SIMD registers

    def run(self, isa: int, xs: list[np.ndarray], offs: np.ndarray, w: np.ndarray, n_out: int,
            ostride: int, blocks: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Micro-kernel ``isa`` over P = len(xs) inputs and ``blocks`` weight blocks: (out, (detected, lanes, ok))."""
        addrs, at = [], _DATA + 4096
        for blob in [*xs, offs.astype("<i8"), w]:   # each 64-byte aligned, with 64 bytes of slack after it
            data = np.ascontiguousarray(blob).tobytes()
            self.uc.mem_write(at, data)
            addrs.append(at)
            at += (len(data) + 127) & ~63
        xp_at, out_at = at, at + 8 * len(xs) + 64
        self.uc.mem_write(xp_at, struct.pack(f"<{len(xs)}Q", *addrs[:len(xs)]))
        self.uc.mem_write(out_at, b"\xff" * 4 * n_out)   # anything the kernel does not write shows
        self.uc.mem_write(_DATA, _ARGS.pack(xp_at, addrs[-2], addrs[-1], out_at, len(offs), ostride, isa, len(xs),
                                            blocks, -1, -1, -1))
        self.uc.reg_write(arm.UC_ARM64_REG_SP, _STACK + _SIZE - 64)
        self.uc.reg_write(arm.UC_ARM64_REG_X0, _DATA)
        self.uc.reg_write(arm.UC_ARM64_REG_LR, _STOP)   # the entry point returns here, which ends the run
        self.uc.emu_start(self.entry, _STOP)
        fields = _ARGS.unpack(bytes(self.uc.mem_read(_DATA, _ARGS.size)))
        out = np.frombuffer(bytes(self.uc.mem_read(out_at, 4 * n_out)), dtype="<i4").copy()
        return out, fields[-3:]


@pytest.fixture(scope="module")
def cpu(tmp_path_factory) -> AArch64:
    elf = tmp_path_factory.mktemp("neon") / "harness.elf"
    cmd = [sys.executable, "-m", "ziglang", "c++", "-target", "aarch64-freestanding-none", "-O3", "-std=c++17",
           "-ffreestanding", "-nostdlib", "-fno-exceptions", "-fno-rtti", "-ffp-contract=off",
           f"-I{ROOT / 'adderconv' / 'kernels'}", "-Wl,-e,run", "-o", str(elf),
           str(ROOT / "tests" / "native" / "int8_sad_harness.cpp")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data = elf.read_bytes()
    assert data[:4] == b"\x7fELF" and struct.unpack_from("<H", data, 18)[0] == 183   # EM_AARCH64
    return AArch64(data)


def sums(xs: list[np.ndarray], offs: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """The reference: [p, o] = sum over chunks t of sum |x_p[offs[t] : offs[t] + 8] - wt[o, 8t : 8t + 8]|."""
    got = np.zeros((len(xs), wt.shape[0]), dtype=np.int64)
    for p, x in enumerate(xs):
        patch = np.concatenate([x[o:o + 8] for o in offs]).astype(np.int64)
        got[p] = np.abs(patch[None, :] - wt.astype(np.int64)).sum(axis=1)
    return got


def case(cpu: AArch64, isa: int, rng: np.random.Generator, P: int, B: int, T: int, z: int,
         x_fill: int | None = None, w_fill: int | None = None) -> None:
    """P positions x B blocks of the path's lanes, T chunks: the emulated kernel's sums equal the reference."""
    lanes = int8.lanes(isa)
    n_out = B * lanes - int(rng.integers(0, lanes))   # a partly filled last block: its channels are padding
    K = T * 8 - int(rng.integers(0, 8))          # a partly filled last chunk: its tail is the zero point
    shape = (n_out, K, 1, 1)
    w = rng.integers(0, 256, shape, dtype=np.uint8) if w_fill is None else np.full(shape, w_fill, dtype=np.uint8)
    packed = int8.pack(torch.from_numpy(w), z, 1, isa).numpy()
    assert packed.size == B * T * lanes * 8
    span = 8 * T + int(rng.integers(0, 40))
    offs = np.sort(rng.choice(span - 7, T, replace=False)) if rng.random() < 0.5 else np.arange(T) * 8
    xs = [rng.integers(0, 256, span, dtype=np.uint8) if x_fill is None else np.full(span, x_fill, dtype=np.uint8)
          for _ in range(P)]
    wt = np.full((n_out, T * 8), z, dtype=np.uint8)
    wt[:, :K] = w.reshape(n_out, K)
    ostride = B * lanes + int(rng.integers(0, 3))
    out, (detected, got_lanes, ok) = cpu.run(isa, xs, offs, packed, P * ostride, ostride, B)
    assert (detected, got_lanes, ok) == (NEON, lanes, 1)
    out = out.reshape(P, ostride)
    np.testing.assert_array_equal(out[:, :n_out], sums(xs, offs, wt))


def test_an_aarch64_cpu_gets_the_neon_path(cpu):
    rng = np.random.default_rng(0)
    xs, offs, w = [np.zeros(8, np.uint8)], np.zeros(1, np.int64), np.zeros(16, np.uint8)
    for isa, lanes, ok in [(NEON, 2, 1), (GENERIC, 1, 1), (AVX2, 4, 0), (VNNI, 8, 0)]:
        _, fields = cpu.run(isa, xs, offs, w, 2, 2, 0)   # B = 0: answer the questions, run nothing
        assert fields == (NEON, lanes, ok)
    case(cpu, NEON, rng, 1, 1, 1, 0)


@pytest.mark.parametrize("isa", [NEON, GENERIC])
def test_every_micro_kernel_exact(cpu, isa):
    """All 8 x 4 (positions x weight blocks) micro-kernels of the path, random bytes, offsets and zero points."""
    rng = np.random.default_rng(isa)
    for P in range(1, 9):
        for B in range(1, 5):
            case(cpu, isa, rng, P, B, int(rng.integers(1, 40)), int(rng.integers(0, 256)))


@pytest.mark.parametrize("T", [127, 128, 129, 256, 257, 600])
def test_neon_sums_do_not_overflow_their_u16_lanes(cpu, T):
    """|255 - 0| in every byte: the u16 lanes are widened every 128 chunks, exactly at their limit (65280)."""
    rng = np.random.default_rng(T)
    case(cpu, NEON, rng, 8, 1, T, 0, x_fill=255, w_fill=0)
    case(cpu, NEON, rng, 2, 4, T, 255, x_fill=0, w_fill=255)
    case(cpu, NEON, rng, 3, 2, T, int(rng.integers(0, 256)))
