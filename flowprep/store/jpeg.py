"""JPEG encoding and decoding of flow codes and RGB frames (OpenCV's codec)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import OutputError



def encode_jpeg(image: np.ndarray, quality: int, *, rgb: bool = False) -> bytes:
    """Gray HxW or RGB HxWx3 uint8 -> JPEG bytes; colour is written 4:4:4 so channels do not bleed."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", image, params)
    if not ok:
        raise OutputError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return buf.tobytes()


def encode_flow_codes(codes: np.ndarray, layout: str, quality: int) -> list[bytes]:
    """uint8 HxWx2 (x, y) codes of one pair -> its JPEGs in Naming.pair_names order: gray x and y images
    (separate), or one colour image with x in red, y in green and 0 in blue (xy0)."""
    if layout == "xy0":
        return [encode_jpeg(np.dstack([codes, np.zeros(codes.shape[:2], np.uint8)]), quality, rgb=True)]
    return [encode_jpeg(np.ascontiguousarray(codes[..., axis]), quality) for axis in (0, 1)]


def codes_from_images(images: list[np.ndarray], layout: str) -> np.ndarray:
    """A pair's decoded JPEGs in encode_flow_codes' order (gray x and y, or one RGB (x, y, 0)) -> uint8 HxWx2."""
    return images[0][..., :2] if layout == "xy0" else np.dstack(images)


def decode_jpeg(data: bytes, name: str, *, rgb: bool = False) -> np.ndarray:
    """JPEG bytes -> gray HxW (or RGB HxWx3) uint8; OutputError naming `name` if it does not decode."""
    flag = cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if image is None:
        raise OutputError(f"{name}: not a readable JPEG ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image
