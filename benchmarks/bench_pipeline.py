"""Images per second through a Data layer's pipeline: 227×227 random crops with mirror from 256×256.

Run: .venv/bin/python benchmarks/bench_pipeline.py [--images 500] [--batch 50] [--batches 60]

Writes an LMDB of random 256×256 BGR images (raw Datums, as ``convert_imageset`` with a
resize writes them; ``--encoded`` stores JPEGs instead), then times ``net_dataset`` of a
TRAIN net (crop_size 227, mirror, per-channel mean_value) after a warm-up, against the same
batch function called in a plain Python loop (what one decoding thread gives).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np

from netdef import load_net
from netdef.data.pipeline import net_dataset
from netdef.data.sources import DataSource, Options
from netdef.proto import netdef_pb2 as pb


def write_database(path: Path, count: int, encoded: bool) -> None:
    rng = np.random.default_rng(0)
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for index in range(count):
            image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            if encoded:
                datum = pb.Datum(data=cv2.imencode(".jpg", image)[1].tobytes(), label=index % 1000, encoded=True)
            else:
                chw = image.transpose(2, 0, 1)
                datum = pb.Datum(channels=3, height=256, width=256, data=chw.tobytes(), label=index % 1000)
            txn.put(f"{index:08d}_image{index}.jpg".encode(), datum.SerializeToString())
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=60, help="batches timed (after 5 of warm-up)")
    parser.add_argument("--encoded", action="store_true", help="JPEG datums (decoded with OpenCV)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "train_lmdb"
        write_database(source, args.images, args.encoded)
        net = load_net(
            'layer { name: "data" type: "Data" top: "data" top: "label" '
            "transform_param { crop_size: 227 mirror: true mean_value: 104 mean_value: 117 mean_value: 123 } "
            f'data_param {{ source: "{source}" batch_size: {args.batch} backend: LMDB }} }}',
            phase="TRAIN",
        )
        iterator = iter(net_dataset(net))  # tensors, as Keras's TensorFlow trainer takes them
        for _ in range(5):
            next(iterator)
        start = time.perf_counter()
        for _ in range(args.batches):
            batch = next(iterator)
        pipeline = args.batches * args.batch / (time.perf_counter() - start)
        assert tuple(batch["data"].shape) == (args.batch, 3, 227, 227)

        layer = DataSource(net.nodes[0], Options(seed=0, phase=pb.TRAIN, root=None, arrays={}))
        serial_batches = max(5, args.batches // 4)
        start = time.perf_counter()
        for index in range(serial_batches):
            layer.batch(index, layer.records(index))
        serial = serial_batches * args.batch / (time.perf_counter() - start)
    kind = "JPEG" if args.encoded else "raw"
    print(f"{args.images} {kind} 256×256 images, batch {args.batch}, {os.cpu_count()} cores")
    print(f"net_dataset (parallel map, prefetch): {pipeline:8.1f} images/s")
    print(f"batch function in a Python loop:      {serial:8.1f} images/s")
    print(f"ratio: {pipeline / serial:.2f}")


if __name__ == "__main__":
    main()
