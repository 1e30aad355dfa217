"""How long netdef takes to read a ResNet-50-size deploy net: parse, upgrade, IR, shapes.

Run: .venv/bin/python benchmarks/bench_load.py [--repeat N]
Reports the median and best of N full loads and, for scale, each stage on its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resnet50_text import resnet50_deploy

from netdef import load_net
from netdef.ir import build_graph
from netdef.netstate import filter_net, make_state
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import parse_text
from netdef.shapes import infer_shapes
from netdef.upgrade import upgrade_net


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    text = resnet50_deploy()
    load_net(text)  # warm: imports and the registry
    net = load_net(text)
    print(f"net: {net.name}, {len(net.nodes)} layers, {net.param_count:,} parameters, {len(text):,} bytes of text")

    parsed = parse_text(text, pb.NetParameter)
    upgraded = upgrade_net(parsed.message, parsed.source)
    filtered = filter_net(upgraded.net, make_state())

    def graph():
        return build_graph(filtered.net, upgraded.locations, "<bench>")

    def shapes():
        infer_shapes(graph())

    stages = {
        "parse": lambda: parse_text(text, pb.NetParameter),
        "upgrade": lambda: upgrade_net(parsed.message, parsed.source),
        "graph": graph,
        "graph+shapes": shapes,
        "total (load_net)": lambda: load_net(text),
    }
    for name, run in stages.items():
        times = timed(run, args.repeat)
        print(f"{name:>18}: median {statistics.median(times) * 1e3:7.1f} ms, best {min(times) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
