"""Fine-tuning SelaVPR's adapters and heads on a robot's own drives (ROS-free).

    from selavpr_ros.train import TrainConfig, train
    summary = train(model, train_drives, val_drives, TrainConfig(), out_dir)

The recipe is the published one (docs: selavpr-reference.md, "Training"): only the adapters,
GeM ``p`` and LocalAdapt learn; triplets with positives within 10 m and negatives beyond 25 m
mined from a cache of global descriptors; triplet loss on global descriptors plus the
mutual-nearest-neighbour local loss; Adam at 1e-5; early stopping on validation Recall@5 after
re-ranking.
"""

from selavpr_ros.train.config import TrainConfig
from selavpr_ros.train.data import Drive, load_bag_drive, load_folder_drive
from selavpr_ros.train.trainer import TrainSummary, train

__all__ = ["Drive", "TrainConfig", "TrainSummary", "load_bag_drive", "load_folder_drive",
           "train"]
