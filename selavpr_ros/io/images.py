"""Camera images to RGB uint8 arrays and back, for ROS messages, bag records and files.

Works on anything shaped like ``sensor_msgs/Image`` (``height``, ``width``, ``encoding``,
``step``, ``is_bigendian``, ``data``) or ``sensor_msgs/CompressedImage`` (``format``, ``data``):
rclpy messages, rosbags messages and plain objects alike, so the node, the bag tools and the
tests share one conversion. It is the equivalent of cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")``
for the encodings cameras publish; anything it cannot decode raises :class:`ImageDecodeError`
with the reason, so callers can log, count and skip the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from selavpr_ros.errors import ImageDecodeError

# encoding -> (channels, numpy dtype, cv2 conversion to RGB or None when already RGB)
_RAW_ENCODINGS: dict[str, tuple[int, str, int | None]] = {
    "rgb8": (3, "u1", None),
    "bgr8": (3, "u1", cv2.COLOR_BGR2RGB),
    "rgba8": (4, "u1", cv2.COLOR_RGBA2RGB),
    "bgra8": (4, "u1", cv2.COLOR_BGRA2RGB),
    "mono8": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8UC1": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8UC3": (3, "u1", cv2.COLOR_BGR2RGB),  # OpenCV's default channel order
    "8UC4": (4, "u1", cv2.COLOR_BGRA2RGB),
    "mono16": (1, "u2", cv2.COLOR_GRAY2RGB),
    "16UC1": (1, "u2", cv2.COLOR_GRAY2RGB),
    "rgb16": (3, "u2", None),
    "bgr16": (3, "u2", cv2.COLOR_BGR2RGB),
    "bayer_rggb8": (1, "u1", cv2.COLOR_BayerBG2RGB),  # OpenCV names Bayer by the 2nd row
    "bayer_bggr8": (1, "u1", cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, "u1", cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, "u1", cv2.COLOR_BayerGB2RGB),
    "yuv422": (2, "u1", cv2.COLOR_YUV2RGB_UYVY),  # ROS "yuv422" is UYVY
    "uyvy": (2, "u1", cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, "u1", cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, "u1", cv2.COLOR_YUV2RGB_YUY2),
}

SUPPORTED_RAW_ENCODINGS = tuple(_RAW_ENCODINGS)

# Decoded pixels allowed per image: a 400 KB PNG can claim 20000x20000 (1.6 GB decoded). 50 MP
# is about twice a 36 MP camera's frame; pass ``max_pixels`` to allow more.
DEFAULT_MAX_PIXELS = 50_000_000


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
            f"limit of {max_pixels / 1e6:g} megapixels (max_pixels)"
        )


def compressed_size(buf: np.ndarray) -> tuple[int, int] | None:
    """Return (width, height) from a PNG, JPEG or BMP header, or None for other formats.

    Read from the header alone, so that a huge image is refused before it is decoded.
    """
    head = buf[:32].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"BM") and len(head) >= 26:
        width = int.from_bytes(head[18:22], "little", signed=True)
        height = int.from_bytes(head[22:26], "little", signed=True)
        return abs(width), abs(height)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(buf)
    return None


def _jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    """Return (width, height) from a JPEG's first start-of-frame marker."""
    data = buf.tobytes() if buf.size <= 2**20 else buf[: 2**20].tobytes()  # headers come first
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None  # not a marker where one must be: let the decoder report it
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return width, height
        i += 2 + length
    return None


def _cvt(pixels: np.ndarray, conversion: int) -> np.ndarray:
    """Convert with OpenCV; its errors (odd sizes for Bayer/YUV, ...) are decode errors."""
    try:
        return cv2.cvtColor(pixels, conversion)
    except cv2.error as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "cv2.error"
        raise ImageDecodeError(
            f"OpenCV cannot convert a {pixels.shape} {pixels.dtype} image: {detail}"
        ) from err


def _as_bytes_view(data: Any) -> np.ndarray:
    """Return the message's data field as a flat uint8 array, without copying when possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:  # a list of ints
        return np.asarray(data, dtype=np.uint8)


def decode_raw(
    data: Any,
    height: int,
    width: int,
    encoding: str,
    step: int = 0,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an (H, W, 3) uint8 RGB array.

    16-bit images are scaled to 8 bits by their full range (65535 -> 255).
    """
    if encoding not in _RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(_RAW_ENCODINGS)})")
    channels, dtype, conversion = _RAW_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image: {width}x{height}")
    _check_pixels(width, height, max_pixels, f"{encoding} image")
    item = np.dtype(dtype).itemsize
    row_bytes = width * channels * item
    step = int(step) or row_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than a {encoding} row of width {width} ({row_bytes} bytes)")
    buf = _as_bytes_view(data)
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError(
            f"{encoding} {width}x{height} with step {step} needs {step * height} bytes, "
            f"message has {buf.size}")
    rows = np.lib.stride_tricks.as_strided(
        buf, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    endian: Literal[">", "<"] = ">" if is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(endian))
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(
        height, width)
    if item == 2:
        pixels = (pixels.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return _cvt(pixels, conversion)


def decode_compressed(
    data: Any, fmt: str = "", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` data (JPEG, PNG, ...) into (H, W, 3) uint8 RGB.

    PNG, JPEG and BMP sizes are checked against ``max_pixels`` from the header, before
    decoding; other formats after.
    """
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageDecodeError(f"compressed depth images are not camera images (format '{fmt}')")
    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ImageDecodeError("empty compressed image")
    size = compressed_size(buf)
    if size is not None:
        _check_pixels(*size, max_pixels, "compressed image")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        image = None
        fmt = f"{fmt}; {str(err).strip().splitlines()[-1] if str(err).strip() else 'cv2.error'}"
    if image is None:
        raise ImageDecodeError(f"corrupt or unsupported compressed image (format '{fmt}', "
                               f"{buf.size} bytes)")
    _check_pixels(image.shape[1], image.shape[0], max_pixels, "decoded image")
    return _bgr_any_to_rgb(image)


def _bgr_any_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's decoded image (gray, BGR or BGRA; 8 or 16 bit) as RGB uint8."""
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return _cvt(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return _cvt(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 2:
        raise ImageDecodeError("two-channel (gray and alpha) images are not supported")
    return _cvt(image, cv2.COLOR_BGR2RGB)


def decode_image_message(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an Image or CompressedImage message (rclpy or rosbags) into RGB uint8."""
    if hasattr(msg, "encoding"):
        return decode_raw(msg.data, int(msg.height), int(msg.width), str(msg.encoding),
                          int(msg.step), bool(msg.is_bigendian), max_pixels)
    if hasattr(msg, "format"):
        return decode_compressed(msg.data, str(msg.format), max_pixels)
    raise ImageDecodeError(f"not an image message: {type(msg).__name__}")


def read_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file into RGB uint8; a missing or corrupt file raises ImageDecodeError."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise ImageDecodeError(f"image file not found: {path}")
    try:
        return decode_compressed(data, Path(path).suffix, max_pixels)
    except ImageDecodeError as err:
        raise ImageDecodeError(f"{path}: {err}") from err


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[bytes, int]:
    """Encode RGB uint8 for a ``sensor_msgs/Image``; returns (data, step)."""
    rgb = _check_rgb(rgb)
    if encoding == "rgb8":
        out = rgb
    elif encoding == "bgr8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgba8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == "bgra8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == "mono8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * 257
    else:
        raise ImageDecodeError(f"cannot encode to '{encoding}' (rgb8, bgr8, rgba8, bgra8, "
                               "mono8, mono16)")
    out = np.ascontiguousarray(out)
    return out.tobytes(), out.strides[0]


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode RGB uint8 as JPEG or PNG bytes for a ``sensor_msgs/CompressedImage``."""
    rgb = _check_rgb(rgb)
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ImageDecodeError(f"cannot compress to '{fmt}' (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageDecodeError(f"OpenCV failed to encode {fmt}")
    return buf.tobytes()


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageDecodeError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} "
                               f"{rgb.shape}")
    return rgb
