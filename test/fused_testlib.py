"""Cases for the fused MNN kernel under Triton's interpreter, run in a child process.

Triton reads ``TRITON_INTERPRET`` when it is first imported (its own ``tl`` helpers are
defined then, interpreted or compiled), so the interpreter cannot be switched on inside a test
process that may already hold a compiled Triton. :func:`run_interpreted` starts this file as a
child with the variable set; the child runs only the code under test (the fused method) and
saves its results, and the test compares them with the exact CPU path computed in the parent.

Features are small integers: every dot product (and its product with a power-of-two scale) is
exact in fp16 and fp32, so the fused fp16 results must equal the exact fp32 ones, ties and all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("counts", "nearest", "mutual", "similarity")
Case = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _integers(rng: np.random.Generator, shape: tuple[int, ...], high: int = 2) -> np.ndarray:
    return rng.integers(-high, high + 1, shape).astype(np.float32)


def _plain(lq: int, lc: int, dim: int) -> Callable[[], Case]:
    def build() -> Case:
        rng = np.random.default_rng(lq + lc + dim)
        return _integers(rng, (lq, dim)), _integers(rng, (3, lc, dim)).astype(np.float16), {}
    return build


def _masked_int8() -> Case:
    rng = np.random.default_rng(7)
    query = _integers(rng, (9, 11, 48))  # a (H, W, C) grid
    cands = _integers(rng, (3, 8, 12, 48), high=3).astype(np.int8)
    cm = rng.random((3, 8, 12)) > 0.2
    cm[2] = False  # a candidate with nothing valid
    options = dict(query_mask=rng.random((9, 11)) > 0.2, candidate_mask=cm,
                   candidate_scale=(2.0 ** rng.integers(-2, 2, (3, 8, 12))).astype(np.float32))
    return query, cands, options


def _negative() -> Case:
    """Every similarity <= 0 (maxima negative or zero), and some scales 0 (so -0 meets +0)."""
    rng = np.random.default_rng(5)
    query = rng.integers(0, 3, (70, 32)).astype(np.float32)
    cands = -rng.integers(0, 3, (3, 90, 32)).astype(np.float16)
    scale = (2.0 ** rng.integers(-1, 2, (3, 90))).astype(np.float32)
    scale[0, ::7] = 0.0  # candidate 0 only: the others keep negative maxima
    return query, cands, {"candidate_scale": scale}


def _ties() -> Case:
    """Every candidate feature is v; queries 40 and 65 (two query blocks of 32) are 2v."""
    v = np.zeros(32, np.float32)
    v[:4] = 1.0
    query = np.tile(v, (70, 1))
    query[[40, 65]] = 2 * v
    query[[3, 50]] = -v
    return query, np.tile(v, (2, 70, 1)).astype(np.float16), {}


def _query_masked() -> Case:
    rng = np.random.default_rng(3)
    query = _integers(rng, (40, 32))
    cands = _integers(rng, (2, 50, 32)).astype(np.float16)
    return query, cands, {"query_mask": np.zeros(40, bool)}


CASES: dict[str, Callable[[], Case]] = {
    "plain_61_130_32": _plain(61, 130, 32),
    "plain_97_64_128": _plain(97, 64, 128),
    "plain_130_61_64": _plain(130, 61, 64),
    "masked_int8": _masked_int8,
    "negative": _negative,
    "ties": _ties,
    "query_masked": _query_masked,
}


def run_interpreted(out: Path, timeout: float = 120.0) -> dict[str, np.ndarray]:
    """Run every case's fused method in a child under the interpreter; return its arrays."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout}{proc.stderr[-3000:]}"
    with np.load(out) as data:
        return dict(data)


def main(out: str) -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 first"
    from selavpr_ros.matching import mnn_matches, mnn_scores

    arrays: dict[str, np.ndarray] = {}
    for name, build in CASES.items():
        query, cands, options = build()
        fused = mnn_matches(query, cands, method="fused", precision="fp16", **options)
        for field in FIELDS:
            arrays[f"{name}/{field}"] = getattr(fused, field)
        arrays[f"{name}/scores"] = mnn_scores(query, cands, method="fused", precision="fp16",
                                              **options)
    import torch

    from selavpr_ros.matching import mnn

    arrays["self_check"] = np.array(mnn.fused_is_exact(torch.device("cpu")))
    np.savez(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1]))


def compile_for_gpu(arch: int, candidates: str, flags: bool, block_n: int, warps: int) -> bytes:
    """Compile the kernel for an NVIDIA GPU of compute capability ``arch`` without one.

    Triton's own ptxas does it on any machine: this catches what the interpreter cannot
    (types, layouts, register allocation) for the shapes the autotuner tries. Returns the cubin.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from selavpr_ros.matching.fused_triton import BLOCK_M, _kernels

    kernel, _ = _kernels(False)
    signature = {"q_ptr": "*fp16", "c_ptr": f"*{candidates}", "scale_ptr": "*fp16",
                 "qmask_ptr": "*u8", "cmask_ptr": "*u8", "row_ptr": "*i32", "part_ptr": "*i32",
                 "M": "i32", "N": "i32", "D": "i32", "stride_qm": "i32", "stride_ck": "i32",
                 "stride_cn": "i32", "stride_sk": "i32", "stride_mk": "i32"}
    constants = {"HAS_SCALE": flags, "HAS_QMASK": flags, "HAS_CMASK": flags,
                 "BLOCK_M": BLOCK_M, "BLOCK_N": block_n, "BLOCK_D": 128, "EVEN_D": True}
    names = [*signature, *constants]
    signature.update({name: "constexpr" for name in constants})
    # what Triton's launcher sees at run time: 16-byte aligned tensors, strides of 128
    aligned = ["q_ptr", "c_ptr", "scale_ptr", "qmask_ptr", "cmask_ptr", "row_ptr", "part_ptr",
               "D", "stride_qm", "stride_ck", "stride_cn"]
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(n),): v for n, v in constants.items()},
                       attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": warps, "num_stages": 3})
    return bytes(compiled.asm["cubin"])
