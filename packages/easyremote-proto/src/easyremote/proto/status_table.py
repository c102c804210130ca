"""The status commands' output: a plain, aligned table for people, JSON for programs.

Shared by every role's ``status`` command so that all of them print the same
thing; plain functions of the ``easyremote.proto.status`` views, without click.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from easyremote.proto.status import FunctionStatus, NodeStatus, ResourceStatus

OUTPUT_FORMATS = ("table", "json")
_GIB = 1 << 30

NODE_COLUMNS = (
    "NODE",
    "STATE",
    "FUNCTIONS",
    "IN-FLIGHT/SLOTS",
    "COMPLETED",
    "FAILED",
    "LATENCY MS",
    "COST/H",
    "CPU%",
    "MEM AVAIL GIB",
    "GPUS",
)
FUNCTION_COLUMNS = ("FUNCTION", "KIND", "IN-FLIGHT", "QUEUED", "COMPLETED", "FAILED", "LATENCY MS")
# Text columns are left-aligned, counts and measures right-aligned.
_LEFT_ALIGNED = {"NODE", "STATE", "FUNCTIONS", "GPUS", "FUNCTION", "KIND"}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain, space-aligned text table.

    Args:
        header: Column titles.
        rows: Cells, one sequence per row, as many as ``header``.

    Returns:
        The table, lines joined by newlines, with no trailing spaces.
    """
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.ljust(width) if title in _LEFT_ALIGNED else cell.rjust(width)
            for title, cell, width in zip(header, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _gpus(resources: ResourceStatus) -> str:
    if not resources.gpus:
        return "-"
    counts = Counter(gpu.name or "GPU" for gpu in resources.gpus)
    return ", ".join(f"{count}x {name}" for name, count in counts.items())


def node_row(node: NodeStatus) -> list[str]:
    """The cells of one node in the status table.

    Args:
        node: A node's status.

    Returns:
        One cell per ``NODE_COLUMNS`` entry.
    """
    resources = node.resources
    reported = resources.memory_total_bytes > 0
    return [
        node.node_id,
        node.state,
        ",".join(node.function_names) or "-",
        f"{node.in_flight}/{node.max_concurrency}",
        str(node.completed),
        str(node.failed),
        f"{node.latency_ms:.1f}",
        f"{node.cost_per_hour:.2f}",
        f"{resources.cpu_percent:.1f}" if reported else "-",
        f"{resources.memory_available_bytes / _GIB:.1f}" if reported else "-",
        _gpus(resources),
    ]


def function_row(function: FunctionStatus) -> list[str]:
    """The cells of one function in a node's function table.

    Args:
        function: A function's status.

    Returns:
        One cell per ``FUNCTION_COLUMNS`` entry.
    """
    kind = ("stream" if function.streaming else "call") + (" async" if function.is_async else "")
    return [
        function.name,
        kind,
        str(function.in_flight),
        str(function.queued),
        str(function.completed),
        str(function.failed),
        f"{function.latency_ms:.1f}",
    ]


def render_status(
    address: str,
    nodes: Sequence[NodeStatus],
    *,
    one_node: bool = False,
    output_format: str = "table",
) -> str:
    """What a status command prints.

    Args:
        address: The gateway asked.
        nodes: What ``fetch_status`` returned.
        one_node: The nodes are the one node asked for: add its function table
            and details.
        output_format: ``"table"`` for people, ``"json"`` for programs (a list
            of ``NodeStatus.to_dict()``).

    Returns:
        The text, without a final newline.
    """
    if output_format == "json":
        return json.dumps([node.to_dict() for node in nodes], indent=2)
    if not nodes:
        return "\n".join(
            [
                f"No nodes connected to {address}.",
                "Start one on a machine with easyremote-node installed:",
                f"  easyremote-node {address} mymodule:node",
            ]
        )
    lines = [format_table(NODE_COLUMNS, [node_row(node) for node in nodes]), ""]
    if one_node:
        node = nodes[0]
        lines += [
            format_table(FUNCTION_COLUMNS, [function_row(f) for f in node.functions]),
            "",
            f"host {node.hostname or '-'}  peer {node.peer or '-'}  "
            f"tags {','.join(node.tags) or '-'}  python {node.python_version or '-'}  "
            f"easyremote {node.easyremote_version or '-'}",
        ]
    else:
        healthy = sum(node.healthy for node in nodes)
        lines.append(f"{len(nodes)} node(s) on {address}, {healthy} healthy.")
    return "\n".join(lines)


__all__ = [
    "FUNCTION_COLUMNS",
    "NODE_COLUMNS",
    "OUTPUT_FORMATS",
    "format_table",
    "function_row",
    "node_row",
    "render_status",
]
