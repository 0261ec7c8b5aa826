"""Image decoding from message fields, bag records and files (hand-built pixel data)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from selavpr_ros.errors import ImageDecodeError
from selavpr_ros.io.images import (
    decode_compressed,
    decode_image_message,
    decode_raw,
    encode_compressed,
    encode_raw,
    read_image_file,
)

# A 2x3 RGB image with distinct channel values everywhere.
RGB = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]],
                [[100, 110, 120], [130, 140, 150], [160, 170, 180]]], dtype=np.uint8)


def test_rgb8_and_bgr8_from_hand_built_bytes():
    assert np.array_equal(decode_raw(RGB.tobytes(), 2, 3, "rgb8"), RGB)
    bgr_bytes = RGB[:, :, ::-1].tobytes()
    assert np.array_equal(decode_raw(bgr_bytes, 2, 3, "bgr8"), RGB)


def test_alpha_encodings_drop_alpha():
    rgba = np.concatenate([RGB, np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_raw(rgba.tobytes(), 2, 3, "rgba8"), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_raw(bgra.tobytes(), 2, 3, "bgra8"), RGB)


def test_row_padding_in_step_is_skipped():
    padded = np.zeros((2, 12), np.uint8)  # 9 bytes of pixels + 3 of padding per row
    padded[:, :9] = RGB.reshape(2, 9)
    padded[:, 9:] = 255
    assert np.array_equal(decode_raw(padded.tobytes(), 2, 3, "rgb8", step=12), RGB)


def test_mono8_and_mono16_both_byte_orders():
    gray = np.array([[0, 128, 255]], np.uint8)
    out = decode_raw(gray.tobytes(), 1, 3, "mono8")
    assert out.shape == (1, 3, 3) and np.array_equal(out[..., 0], gray)
    assert np.array_equal(out[..., 0], out[..., 2])
    gray16 = np.array([[0, 32896, 65535]], np.uint16)  # -> 0, 128, 255
    little = decode_raw(gray16.astype("<u2").tobytes(), 1, 3, "mono16", is_bigendian=False)
    big = decode_raw(gray16.astype(">u2").tobytes(), 1, 3, "mono16", is_bigendian=True)
    assert little[0, :, 1].tolist() == [0, 128, 255]
    assert np.array_equal(little, big)


def test_yuyv_of_a_gray_pair_decodes_to_gray():
    # Y0 U Y1 V with neutral chroma (128): both pixels are gray, at BT.601 video range
    # levels 255/219 * (Y - 16): 97.8 and 214.0.
    yuyv = np.array([[100, 128, 200, 128]], np.uint8)
    out = decode_raw(yuyv.tobytes(), 1, 2, "yuyv")
    assert out.shape == (1, 2, 3)
    assert np.abs(out[0, 0].astype(int) - 98).max() <= 1
    assert np.abs(out[0, 1].astype(int) - 214).max() <= 1
    uyvy = np.array([[128, 100, 128, 200]], np.uint8)
    assert np.array_equal(decode_raw(uyvy.tobytes(), 1, 2, "yuv422"), out)


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoding="32FC1"), "unsupported image encoding '32FC1'"),
    (dict(encoding="rgb8", step=5), "step 5 is smaller"),
    (dict(encoding="rgb8", data=RGB.tobytes()[:-1]), "needs 18 bytes, message has 17"),
    (dict(encoding="rgb8", height=0), "empty image"),
])
def test_bad_raw_images_are_refused_with_the_reason(kwargs, message):
    args = dict(data=RGB.tobytes(), height=2, width=3, encoding="rgb8", step=0)
    args.update(kwargs)
    with pytest.raises(ImageDecodeError, match=message):
        decode_raw(args["data"], args["height"], args["width"], args["encoding"], args["step"])


def test_png_round_trip_is_lossless_and_jpeg_is_close():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert np.array_equal(decode_compressed(encode_compressed(image, "png"), "png"), image)
    smooth = np.repeat(np.repeat(image[::8, ::8], 8, axis=0), 8, axis=1)
    jpeg = decode_compressed(encode_compressed(smooth, "jpeg", quality=95), "jpeg")
    assert jpeg.shape == smooth.shape
    assert np.abs(jpeg.astype(int) - smooth.astype(int)).mean() < 8


def test_corrupt_and_empty_compressed_images_are_refused():
    good = encode_compressed(RGB, "jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed(good[: len(good) // 3] + b"\x00" * 10, "jpeg")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_compressed(b"", "jpeg")
    with pytest.raises(ImageDecodeError, match="depth"):
        decode_compressed(good, "16UC1; compressedDepth png")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_encode_raw_then_decode_returns_the_image(encoding):
    data, step = encode_raw(RGB, encoding)
    assert step == 3 * (4 if "a" in encoding[-2:] else 3)
    assert np.array_equal(decode_raw(data, 2, 3, encoding, step), RGB)


def test_duck_typed_messages_raw_and_compressed():
    raw = SimpleNamespace(height=2, width=3, encoding="bgr8", step=9, is_bigendian=0,
                          data=np.frombuffer(RGB[:, :, ::-1].tobytes(), np.uint8))
    assert np.array_equal(decode_image_message(raw), RGB)
    compressed = SimpleNamespace(format="png", data=list(encode_compressed(RGB, "png")))
    assert np.array_equal(decode_image_message(compressed), RGB)
    with pytest.raises(ImageDecodeError, match="not an image message"):
        decode_image_message(SimpleNamespace(foo=1))


def test_rclpy_image_message_decodes():
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CompressedImage, Image

    data, step = encode_raw(RGB, "bgr8")
    msg = Image(height=2, width=3, encoding="bgr8", step=step, data=data)
    assert np.array_equal(decode_image_message(msg), RGB)
    cmsg = CompressedImage(format="png", data=encode_compressed(RGB, "png"))
    assert np.array_equal(decode_image_message(cmsg), RGB)


def test_image_files_missing_and_corrupt(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode_compressed(RGB, "png"))
    assert np.array_equal(read_image_file(path), RGB)
    with pytest.raises(ImageDecodeError, match="not found"):
        read_image_file(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8not a jpeg")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        read_image_file(bad)


# ------------------------------------------------------------------ decoded-pixel limit
def _png_claiming(width: int, height: int) -> bytes:
    """Make a small, well-formed PNG that claims a huge size, with a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_a_huge_png_is_refused_from_its_header(tmp_path) -> None:
    data = _png_claiming(20000, 20000)
    assert len(data) < 200
    with pytest.raises(ImageDecodeError, match="20000x20000 = 400 megapixels, more than the "
                                               "limit of 50 megapixels"):
        decode_compressed(data, "png")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError, match="bomb.png: .*400 megapixels"):
        read_image_file(path)
    msg = SimpleNamespace(format="png", data=np.frombuffer(data, np.uint8))
    with pytest.raises(ImageDecodeError, match="400 megapixels"):
        decode_image_message(msg)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_the_pixel_limit_is_configurable_and_read_before_decoding(fmt: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = encode_compressed(image, fmt)
    assert decode_compressed(data, fmt, max_pixels=48 * 64).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match="compressed image is 64x48"):
        decode_compressed(data, fmt, max_pixels=48 * 64 - 1)


def test_a_raw_image_over_the_limit_is_refused_before_copying() -> None:
    msg = SimpleNamespace(encoding="rgb8", height=30000, width=30000, step=90000,
                          is_bigendian=0, data=np.zeros(10, np.uint8))
    with pytest.raises(ImageDecodeError, match="rgb8 image is 30000x30000 = 900 megapixels"):
        decode_image_message(msg)
    assert decode_raw(RGB.tobytes(), 2, 3, "rgb8", max_pixels=6).shape == (2, 3, 3)
    with pytest.raises(ImageDecodeError, match="limit"):
        decode_raw(RGB.tobytes(), 2, 3, "rgb8", max_pixels=5)


def test_opencv_conversion_errors_are_decode_errors() -> None:
    # UYVY needs an even width; OpenCV asserts, which must become an ImageDecodeError
    with pytest.raises(ImageDecodeError, match="OpenCV cannot convert"):
        decode_raw(bytes(2 * 3 * 2), 2, 3, "yuv422")
