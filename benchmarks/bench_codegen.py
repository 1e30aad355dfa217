"""How long ``netdef codegen`` takes to write the Keras source of a ResNet-50-size net.

Run: .venv/bin/python benchmarks/bench_codegen.py [--repeat N]
Times generate() from an already loaded net (planning, walking, rendering), plain and
standalone, and the whole call from prototxt text; Keras's import is excluded (warm-up).
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
from netdef.codegen import generate


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
    net = load_net(text)
    source = generate(net, standalone=True)  # warm: Keras, the registry, the templates
    print(f"net: {net.name}, {len(net.nodes)} layers; standalone module {len(source.splitlines()):,} lines")
    cases: dict[str, Callable[[], object]] = {
        "generate (loaded net)": lambda: generate(net),
        "generate standalone (loaded net)": lambda: generate(net, standalone=True),
        "generate from prototxt text": lambda: generate(text),
    }
    for name, run in cases.items():
        times = timed(run, args.repeat)
        print(f"{name}: median {statistics.median(times) * 1e3:.1f} ms, best {min(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
