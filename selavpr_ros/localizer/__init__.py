"""The ROS-free localizer: global retrieval, MNN re-ranking and the accept/confidence decision."""

from selavpr_ros.localizer.cache import LocalFeatureCache
from selavpr_ros.localizer.config import LocalizerConfig
from selavpr_ros.localizer.decision import Decision, confidence, decide
from selavpr_ros.localizer.localizer import Candidate, LocalizationResult, Localizer

__all__ = [
    "Candidate",
    "Decision",
    "LocalFeatureCache",
    "LocalizationResult",
    "Localizer",
    "LocalizerConfig",
    "confidence",
    "decide",
]
