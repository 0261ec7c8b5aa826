"""The SelaVPR network and everything needed to run it: config, weights loading, preprocessing.

Public API::

    from selavpr_ros.model import SelaVPR, SelaVPRConfig, load_checkpoint, preprocess

    cfg = SelaVPRConfig(backbone="vits14", depth=2)          # small random model (tests)
    model = SelaVPR(cfg).eval()                               # model.trained is False
    x = preprocess(images)                                    # uint8 RGB -> (B,3,224,224) fp32
    local, glob = model(x)                                    # (B,61,61,128), (B,embed_dim)

    model, cfg = load_checkpoint(path_or_mapping, config=None, image_size=None)
    runner = InferenceRunner(model, device="cuda", precision="fp16", batch_size=16)
    local, glob = runner.extract(images)                      # fp32 CPU tensors
    weights_fingerprint(model)                                # sha256 hex of the weights
    convert_checkpoint("SelaVPR_msls.pth", "SelaVPR_msls.safetensors")

Only stdlib, numpy, torch and safetensors are imported here (no ROS, faiss or OpenCV), so the
package runs on any machine with torch.
"""

from selavpr_ros.model.checkpoint import (
    convert_checkpoint,
    infer_config,
    load_checkpoint,
    normalize_keys,
    save_safetensors,
)
from selavpr_ros.model.config import BACKBONES, SelaVPRConfig
from selavpr_ros.model.fingerprint import weights_fingerprint
from selavpr_ros.model.inference import InferenceRunner, extract
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InferenceRunner",
    "SelaVPR",
    "SelaVPRConfig",
    "convert_checkpoint",
    "extract",
    "infer_config",
    "load_checkpoint",
    "normalize_keys",
    "preprocess",
    "save_safetensors",
    "weights_fingerprint",
]
