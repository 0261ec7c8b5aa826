"""Exceptions raised by selavpr_ros.

Every error a user can cause (a wrong file, a bad parameter, a damaged map) is raised as a
subclass of :class:`SelaVPRError` with a message that names the offending value, so the
command line and the nodes can report it in one line instead of a traceback.
"""


class SelaVPRError(Exception):
    """Base class of all errors raised on purpose by selavpr_ros."""


class ConfigError(SelaVPRError, ValueError):
    """A configuration value or parameter is invalid."""


class CheckpointError(SelaVPRError):
    """A checkpoint or weights file cannot be loaded (bad format, keys, shapes, unsafe pickle)."""


class MapFormatError(SelaVPRError):
    """A place map on disk is missing, damaged, of an unknown version or by another extractor."""


class ImageDecodeError(SelaVPRError, ValueError):
    """An image (file or message) cannot be decoded into RGB pixels."""


class BagReadError(SelaVPRError):
    """A rosbag cannot be read, or lacks the requested topic."""
