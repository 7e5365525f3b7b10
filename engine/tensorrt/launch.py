"""Launching the attention-modulation kernels from their PTX: what a TensorRT engine's plugin and
`gpu-check` need at run time, with numpy and cuda.bindings only (never Triton, which only compiles them:
kernels.py). The kernels' signature (`ARGUMENTS`), block sizes and grids are stated here once."""
from __future__ import annotations

import re

import numpy as np

from ..network.op import EPS
from .device import cuda_call

BLOCK_M, BLOCK_N, BLOCK_R = 64, 64, 128


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_sizes(cq: int, c: int) -> dict[str, int]:
    """Compile-time block sizes for a layer's widths (tl.dot needs every dimension >= 16)."""
    return dict(BLOCK_D=max(16, _next_power_of_2(cq)), BLOCK_C=max(16, min(64, _next_power_of_2(c))))


def grids(b: int, c: int, n: int, block_c: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Launch grids of the two kernels."""
    cb = _cdiv(c, block_c)
    return (_cdiv(n, BLOCK_M), b, cb), (b, cb, 1)


# Each kernel's runtime arguments in order, as (name, Triton type; "{t}" is the tensors' dtype): the
# one statement of the signature, which compile_ptx compiles and the plugin's launcher passes.
ARGUMENTS = {
    "attention_kernel": (("q", "*{t}"), ("k", "*{t}"), ("v", "*{t}"), ("hba", "*fp32"),
                         ("n", "i32"), ("cq", "i32"), ("c", "i32")),
    "modulation_kernel": (("h", "*{t}"), ("mask", "*{t}"), ("hba", "*fp32"), ("gamma", "*{t}"), ("out", "*{t}"),
                          ("n", "i32"), ("c", "i32"), ("eps", "fp32")),
}


PTX_TYPES = {"i32": "u32", "fp32": "f32"}  # Triton argument types as PTX params; pointers are u64


def kernel_args(kind: str, ptrs: dict[str, int], n: int, cq: int, c: int) -> list[tuple[str, int | float]]:
    """The declared arguments of one kernel as (ptx type, value), in the order of its signature
    (ARGUMENTS), without the hidden scratch pointers Triton appends (see `launch_args`)."""
    values = {**ptrs, "n": n, "cq": cq, "c": c, "eps": EPS}
    return [("u64" if ty.startswith("*") else PTX_TYPES[ty], values[name]) for name, ty in ARGUMENTS[kind]]


def launch_args(kind: str, ptrs: dict[str, int], n: int, cq: int, c: int) -> list[tuple[str, int | float]]:
    """Everything the PTX entry takes: the declared arguments, then Triton's global and profile scratch
    pointers (Triton 3.3 and later; null, since these kernels need no scratch)."""
    return kernel_args(kind, ptrs, n, cq, c) + [("u64", 0), ("u64", 0)]


def check_signature(kind: str, k: dict) -> None:
    """Refuse a kernel whose PTX does not take exactly what `launch_args` passes, with no scratch."""
    # NOTE: a Triton that changed its hidden arguments would have the kernel read past what is passed: an
    # illegal address at best, wrong pictures at worst. Checked on Triton 3.9 here (test_triton_op).
    ptrs = {name: 0 for name, ty in ARGUMENTS[kind] if ty.startswith("*")}
    passed, takes = [t for t, _ in launch_args(kind, ptrs, 0, 0, 0)], ptx_params(k["ptx"])
    scratch = [k.get("global_scratch", 0), k.get("profile_scratch", 0)]
    if takes != passed or any(scratch):
        raise RuntimeError(f"{kind}: its PTX takes {takes} with scratch sizes {scratch}; the launcher passes "
                           f"{passed} with no scratch (compiled by another Triton than launch.py knows?)")


class PtxKernels:
    """The two kernels loaded from PTX into the current CUDA context, launched through cuda.bindings."""

    def __init__(self, compiled: dict[str, dict]):
        from cuda.bindings import driver

        self.driver = driver
        self.compiled = compiled
        self.functions = {}
        for kind, k in compiled.items():
            check_signature(kind, k)
            module = cuda_call(driver.cuModuleLoadData(k["ptx"].encode() + b"\0"))
            self.functions[kind] = cuda_call(driver.cuModuleGetFunction(module, k["name"].encode()))
            if k["shared"] > 48 * 1024:
                cuda_call(driver.cuFuncSetAttribute(
                    self.functions[kind], driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k["shared"]))

    def launch(self, ptrs: dict[str, int], b: int, c: int, cq: int, n: int, stream: int) -> None:
        """Both kernels on `stream`: attention into ptrs["hba"], then the modulation into ptrs["out"]."""
        ctypes_of = {"u64": np.uint64, "u32": np.uint32, "f32": np.float32}
        g1, g2 = grids(b, c, n, self.compiled["attention_kernel"]["BLOCK_C"])
        for kind, grid in (("attention_kernel", g1), ("modulation_kernel", g2)):
            k = self.compiled[kind]
            values = [np.array([v], dtype=ctypes_of[t]) for t, v in launch_args(kind, ptrs, n, cq, c)]
            pointers = np.array([v.ctypes.data for v in values], dtype=np.uint64)
            cuda_call(self.driver.cuLaunchKernel(
                self.functions[kind], *grid, 32 * k["num_warps"], 1, 1, k["shared"], stream, pointers.ctypes.data, 0))


def ptx_params(ptx: str) -> list[str]:
    """The parameter types of the PTX entry point, in order (e.g. ["u64", "u64", "u32"])."""
    entry = re.search(r"\.entry\s+\w+\s*\((.*?)\)", ptx, re.S)
    if entry is None:
        raise ValueError("no .entry in PTX")
    return re.findall(r"\.param\s+\.(\w+)", entry.group(1))
