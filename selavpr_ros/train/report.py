"""The run's per-epoch log (JSON lines) and its loss/recall plot (matplotlib PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selavpr_ros.map.fsutil import atomic_write_bytes

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "training.png"


def write_log(history: list[dict[str, Any]], out_dir: Path) -> Path:
    """One JSON object per epoch (epoch 0 = validation before training), rewritten whole."""
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in history)
    path = out_dir / LOG_NAME
    atomic_write_bytes(path, text.encode())
    return path


def plot_history(history: list[dict[str, Any]], out_dir: Path, ns: tuple[int, ...]) -> Path:
    """Loss per epoch (left) and validation Recall@N global / re-ranked (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(10, 4))
    trained = [r for r in history if r.get("loss") is not None]
    for key, label in (("loss", "total"), ("loss_global", "global triplet"),
                       ("loss_local", "local MNN")):
        ax_loss.plot([r["epoch"] for r in trained], [r[key] for r in trained], marker="o",
                     label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean loss per triplet")
    ax_loss.legend()
    validated = [r for r in history if r.get("val")]
    for stage, style in (("global", "--"), ("reranked", "-")):
        for n in ns[:2]:
            ax_rec.plot([r["epoch"] for r in validated],
                        [100 * r["val"][stage][str(n)] for r in validated], style, marker="o",
                        label=f"R@{n} {stage}")
    ax_rec.set_xlabel("epoch (0 = before training)")
    ax_rec.set_ylabel("validation recall (%)")
    ax_rec.set_ylim(0, 100)
    if validated:
        ax_rec.legend()
    fig.tight_layout()
    path = out_dir / PLOT_NAME
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
