"""What keeping the MNN pairs costs the re-ranking: ``mnn_matches`` against ``mnn_scores``.

The localizer re-ranks with ``mnn_matches`` when a pose may follow (the pose reuses the pairs),
else with ``mnn_scores``. Both run on the same random unit features, interleaved (so a busy
machine slows both alike), and the counts must be identical. Two shapes: SelaVPR's grid
(61x61x128, plain MNN: the tiled method) and the classical extractor's 2063 features with the
ratio filter (the chunked method).

    python bench/bench_mnn_pairs.py --k 10 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.matching import mnn_matches, mnn_scores  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cases = {"grid 61x61x128, plain (tiled)": (61 * 61, {}),
             "2063x128, ratio 0.9 (chunked)": (2063, {"match_filter": "ratio", "ratio": 0.9})}
    print(f"K={args.k}, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()}")
    for name, (count, options) in cases.items():
        query = unit(rng.standard_normal((count, 128)))
        cands = unit(query[None] + 0.2 * rng.standard_normal((args.k, count, 128)))
        cands = cands.astype(np.float16)
        runs: dict[str, Callable[[], np.ndarray]] = {
            "scores": lambda q=query, c=cands, o=options: mnn_scores(q, c, **o),
            "matches": lambda q=query, c=cands, o=options: mnn_matches(q, c, **o).counts,
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        counts = {}
        for _ in range(args.repeats + 1):  # the first round warms up
            for key, run in runs.items():
                start = time.perf_counter()
                counts[key] = run()
                times[key].append(time.perf_counter() - start)
        assert np.array_equal(counts["scores"], counts["matches"]), "counts differ"
        ms = {k: 1e3 * statistics.median(v[1:]) for k, v in times.items()}
        print(f"{name}: scores {ms['scores']:.0f} ms, matches {ms['matches']:.0f} ms "
              f"({100 * (ms['matches'] / ms['scores'] - 1):+.1f} %), counts identical, "
              f"mean count {counts['scores'].mean():.0f}")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
