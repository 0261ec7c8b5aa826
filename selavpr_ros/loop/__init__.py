"""Loop closure within the current run: a growing keyframe database and the SLAM decision."""

from selavpr_ros.loop.config import LoopConfig
from selavpr_ros.loop.database import RunDatabase
from selavpr_ros.loop.detector import LoopDetector, LoopResult

__all__ = ["LoopConfig", "LoopDetector", "LoopResult", "RunDatabase"]
