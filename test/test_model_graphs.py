"""CUDA-graph dispatch of the inference runner: per-shape capture, caps, fallback to eager.

The dispatch logic runs on the CPU with a stand-in capture; replay-equals-eager needs CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavpr_ros.model import InferenceRunner, SelaVPR, SelaVPRConfig
from selavpr_ros.model.inference import GraphCache

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _eager(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x * 0, x.sum(dim=(1, 2, 3))


class _Capture:
    """Records captures; its 'graphs' tag their output so the test sees which path ran."""

    def __init__(self, fail_shapes: tuple[tuple[int, ...], ...] = ()) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.fail_shapes = fail_shapes

    def __call__(self, example: torch.Tensor):
        self.shapes.append(tuple(example.shape))
        if tuple(example.shape) in self.fail_shapes:
            raise RuntimeError("operation not permitted when stream is capturing")
        return lambda x: (x * 0 + 1, x.sum(dim=(1, 2, 3)))


def test_graph_cache_captures_once_per_shape_and_caps_the_count() -> None:
    capture = _Capture()
    cache = GraphCache(capture, _eager, max_graphs=2)
    a, b, c = torch.ones(1, 3, 2, 2), torch.ones(2, 3, 2, 2), torch.ones(3, 3, 2, 2)
    assert cache(a)[0].eq(1).all() and cache(a)[0].eq(1).all()
    assert cache(b)[0].eq(1).all()
    assert cache(c)[0].eq(0).all()  # third shape: over the cap, eager
    assert capture.shapes == [(1, 3, 2, 2), (2, 3, 2, 2)]
    # dtype is part of the key
    assert cache(a.double())[0].eq(0).all()


def test_graph_cache_falls_back_to_eager_after_a_failed_capture() -> None:
    capture = _Capture(fail_shapes=((1, 3, 2, 2),))
    cache = GraphCache(capture, _eager)
    x = torch.ones(1, 3, 2, 2)
    assert cache(x)[0].eq(0).all() and cache(x)[0].eq(0).all()
    assert capture.shapes == [(1, 3, 2, 2)]  # not retried
    assert cache.failed == {((1, 3, 2, 2), torch.float32)}
    assert cache(torch.ones(2, 3, 2, 2))[0].eq(1).all()  # other shapes still captured


def test_cpu_runner_stays_eager() -> None:
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1)).eval()
    runner = InferenceRunner(model, "cpu", cuda_graphs=True, tf32=True)
    assert not runner.cuda_graphs
    assert not torch.backends.cuda.matmul.allow_tf32 or torch.cuda.is_available()


def _images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (200 + 10 * i, 300, 3), dtype=np.uint8) for i in range(count)]


@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_replay_equals_eager(precision: str) -> None:
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=2)).eval()
    eager = InferenceRunner(model, "cuda", precision, batch_size=2, cuda_graphs=False)
    graphed = InferenceRunner(model, "cuda", precision, batch_size=2, cuda_graphs=True)
    # the same kernels replayed: equal up to a GEMM algorithm cuBLAS may pick differently while
    # capturing (bench_runner.py reports the actual largest difference)
    atol = 1e-5 if precision == "fp32" else 2e-3
    for seed in range(3):  # replays on new inputs, full and partial batches
        images = _images(3, seed)
        want_local, want_global = eager.extract(images)
        got_local, got_global = graphed.extract(images)
        torch.testing.assert_close(got_local, want_local, rtol=0, atol=atol)
        torch.testing.assert_close(got_global, want_global, rtol=0, atol=atol)
        assert not torch.equal(got_global[0], got_global[1])  # a stale buffer would repeat
    assert graphed._graphs is not None
    assert set(graphed._graphs.graphs) == {((2, 3, 224, 224), torch.float32),
                                           ((1, 3, 224, 224), torch.float32)}
    assert not graphed._graphs.failed


@cuda
def test_graph_outputs_are_not_overwritten_by_the_next_replay() -> None:
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1)).eval()
    runner = InferenceRunner(model, "cuda", "fp16", batch_size=1, cuda_graphs=True)
    first = runner.extract(_images(1, 0), to_cpu=False)[1].clone()
    kept = runner.extract(_images(1, 0), to_cpu=False)[1]
    runner.extract(_images(1, 1), to_cpu=False)
    torch.testing.assert_close(kept, first, rtol=0, atol=0)
