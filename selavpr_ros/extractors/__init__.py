"""Implementations of :class:`selavpr_ros.extractor.Extractor`."""
