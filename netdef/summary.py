"""A net at a glance: each layer with its top shapes and parameter count.

Shapes are Caffe's (N, C, H, W) and parameter counts are the elements of each layer's
Caffe blobs, i.e. what its .caffemodel stores, so the numbers can be checked against
Caffe's own log. The total counts a blob shared by several layers once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netdef.ir import Net
from netdef.layers.registry import Shape


@dataclass(frozen=True)
class SummaryRow:
    name: str
    type: str
    tops: dict[str, Shape | None]
    params: int


def summarize(net: Net) -> list[SummaryRow]:
    return [
        SummaryRow(
            name=node.name,
            type=node.type,
            tops={value.blob: value.shape for value in node.tops},
            params=node.param_count,
        )
        for node in net.nodes
    ]


def format_shape(shape: Shape | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def summary_json(net: Net) -> dict[str, Any]:
    """The ``--json`` form: plain lists and ints, stable for golden files and scripts."""
    return {
        "name": net.name,
        "layers": [
            {
                "name": row.name,
                "type": row.type,
                "tops": {blob: None if shape is None else list(shape) for blob, shape in row.tops.items()},
                "params": row.params,
            }
            for row in summarize(net)
        ],
        "total_params": net.param_count,
    }


def summary_table(net: Net) -> str:
    """A fixed-width table, one line per top, and a total line."""
    header = ("Layer", "Type", "Top", "Shape", "Params")
    lines: list[tuple[str, ...]] = []
    for row in summarize(net):
        tops = list(row.tops.items()) or [("", None)]
        for index, (blob, shape) in enumerate(tops):
            first = index == 0
            lines.append(
                (
                    row.name if first else "",
                    row.type if first else "",
                    blob,
                    format_shape(shape) if blob else "",
                    f"{row.params:,}" if first else "",
                )
            )
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        left = "  ".join(cell.ljust(width) for cell, width in zip(cells[:-1], widths[:-1], strict=True))
        return f"{left}  {cells[-1].rjust(widths[-1])}".rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    title = f"{net.name or '(unnamed net)'}: {len(net.nodes)} layers"
    body = [title, render(header), rule, *(render(line) for line in lines), rule]
    body.append(f"Total parameters: {net.param_count:,}")
    return "\n".join(body)
