"""Implementations of :class:`selavpr_ros.extractors.base.Extractor`."""
