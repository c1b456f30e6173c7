"""Each stage of flowprep used alone from Python, on the sample clip shipped beside this script.

    python examples/python_api.py [OUTPUT_DIR]
"""
import sys
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np

from flowprep import (DecodeConfig, ExtractConfig, FlowConfig, StoreConfig, create_backend, dequantize,
                      extract_video, open_output, quantize)
from flowprep.decode import flow_frames, open_reader

CLIP = Path(__file__).with_name("carphone_pristine.mp4")


def main(out_root: Path) -> None:
    # 1. Decode: stream RGB frames at 10 fps, resized to 340x256, as gray uint8 for the flow stage.
    decode = DecodeConfig(fps=10, size=(340, 256))
    with open_reader(CLIP, "pyav") as reader:
        # islice stops decoding after three frames: readers stream, nothing else is held in memory.
        frames = [gray for _, gray in islice(flow_frames(reader, decode), 3)]
    print(f"decoded {len(frames)} frames of {frames[0].shape} (HxW, uint8)")

    # 2. Flow: any backend by name; flow is float32 HxWx2 in pixels, OpenCV's direction.
    backend = create_backend(FlowConfig("tvl1"))
    flow = backend.compute(frames[0], frames[1])
    print(f"TV-L1 flow {flow.shape} {flow.dtype}, mean |u| {np.abs(flow[..., 0]).mean():.2f} px")

    # 3. Quantize and back: uint8 codes, error <= bound/255 px inside the bound.
    q = quantize(flow, bound=20)
    error = np.abs(dequantize(q, bound=20) - np.clip(flow, -20, 20)).max()
    print(f"quantized to {q.dtype}, zero -> {quantize(np.zeros(1), 20)[0]}, max round-trip error {error:.4f} px")

    # 4. The whole pipeline for one video, then read it back (directory or zip alike).
    config = ExtractConfig(decode=decode, flow=FlowConfig("dis"), store=StoreConfig(bound=20, rgb=True))
    meta = extract_video(CLIP, out_root / "carphone", config)
    with open_output(out_root / "carphone") as out:
        x = out.read_image("flow_x_00001.jpg")
    print(f"extract_video wrote {meta['flow_pairs']} pairs and {meta['rgb_frames']} RGB frames "
          f"in {meta['seconds']:.2f} s; flow_x_00001.jpg is {x.shape} {x.dtype}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="flowprep-")))
