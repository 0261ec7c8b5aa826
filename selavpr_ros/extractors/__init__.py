"""The extractor interface (:mod:`selavpr_ros.extractors.base`) and its implementations."""
