"""Block diagrams of a network, one box per stage (`cnnbuilder show --plot FILE.png`).

Each stem, stage and head is a box whose height and colour grow with its cost (multiply-adds,
or parameters where the input size is unknown). Above a box its connectivity is drawn: an arc
per residual unit (solid: identity shortcut, dashed: projection, dotted: zero-padded option A),
a fan of arcs for a dense block (every layer reads every earlier feature map), split-and-merge
branches for inception modules, ticks for plain units (no shortcut). Pools and transitions
are hatched; strided units say so in their label (`convolutional/2`). Under each box: its
blocks, output shape, parameters and multiply-adds.

Matplotlib with the Agg backend: no display needed.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

# A Figure of its own, not pyplot: drawing a file must neither need a display nor switch
# the backend of a notebook or application that imported cnnbuilder.
import matplotlib
from matplotlib import patches
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from cnnbuilder.errors import CnnBuilderError
from cnnbuilder.recipe.units import format_count  # noqa: E402

RESIDUAL = ("identity", "convolutional", "bottleneck")
HIDDEN = ("pad", "bn", "activation", "dropout", "flatten")  # not drawn (the `show` table lists them)
DOWNSAMPLING = ("pool", "transition")
MAX_ARCS = 8          # residual units drawn per segment (the label gives the real count)
MAX_DENSE_NODES = 7   # dense-block layers drawn as nodes of the fan
COLORMAP = "YlOrRd"

SHORTCUT_STYLE = {"identity": "-", "projection": "--", "pad": ":"}
SHORTCUT_LABEL = {
    "identity": "identity shortcut",
    "projection": "projection shortcut (1×1 conv)",
    "pad": "zero-padded shortcut (option A)",
}


@dataclass
class Segment:
    """Consecutive steps of one block type inside a stage."""

    block: str
    steps: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.steps)

    @property
    def fields(self) -> dict:
        return self.steps[0].fields

    @property
    def weight(self) -> float:
        if self.block in DOWNSAMPLING:
            return 0.6
        if self.block in RESIDUAL or self.block in ("dense", "inception"):
            return 1.6 + 0.25 * math.sqrt(self.count)
        return 1.0


def _size(value) -> str:
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return f"{value}×{value}"


def _stride(value) -> str:
    if value in (None, 1, (1, 1), [1, 1]):
        return ""
    return f"/{value[0] if isinstance(value, (list, tuple)) else value}"


def shortcut_kind(step) -> str | None:
    """`identity`, `projection`, `pad` or None (no shortcut) for a residual step."""
    kind = step.fields.get("shortcut", "identity")
    if kind == "none":
        return None
    if kind == "auto":
        return "identity" if tuple(step.input_shape) == tuple(step.output_shape) else "projection"
    return kind


def residual_detail(segment: Segment) -> str:
    """`bottleneck, g=32, pre-act, no shortcut` — what kind of residual unit this is."""
    f, detail = segment.fields, []
    if segment.block != "bottleneck" and f.get("bottleneck"):
        detail.append("bottleneck")
    if f.get("groups", 1) != 1:
        detail.append(f"g={f['groups']}")
    if f.get("style") == "v2":
        detail.append("pre-act")
    if f.get("shortcut") == "none":
        detail.append("no shortcut")
    return ", ".join(detail)


def segment_label(segment: Segment, with_detail: bool = True) -> str:
    """A short readable name: `conv 7×7/2, 64`, `identity ×17`, `dense ×24 (k=32)`."""
    f, n, block = segment.fields, segment.count, segment.block
    times = f" ×{n}" if n > 1 else ""
    if block == "conv":
        groups = f", g={f['groups']}" if f.get("groups", 1) != 1 else ""
        return f"conv {_size(f.get('kernel', 1))}{_stride(f.get('stride'))}, {f.get('filters')}{groups}{times}"
    if block == "pool":
        size = f.get("size", 2)
        stride = f.get("stride") or size
        return f"{f.get('type', 'max')} pool {_size(size)}{_stride(stride)}{times}"
    if block == "global_pool":
        return f"global {f.get('type', 'avg')} pool"
    if block == "fc":
        units = [str(s.fields.get("units")) for s in segment.steps]
        return "fc " + "-".join(units)
    if block in RESIDUAL:
        strides = [_stride(s.fields.get("stride", 1)) for s in segment.steps]
        if len(set(strides)) == 1:
            text = f"{block}{strides[0]}{times}"
        else:  # a stage whose first unit downsamples
            text = f"{block}{times}, first {strides[0] or '/1'}"
        detail = residual_detail(segment) if with_detail else ""
        return text + (f" ({detail})" if detail else "")
    if block == "dense":
        layers = sum(int(s.fields.get("layers", 0)) for s in segment.steps)
        return f"dense ×{layers} (k={f.get('growth_rate')})"
    if block == "transition":
        return f"transition θ={f.get('compression')}{times}"
    if block == "inception":
        return f"inception{times}"
    if block == "dropout":
        return f"dropout {f.get('rate')}"
    return f"{block}{times}"


def segments_of(steps) -> list[Segment]:
    found: list[Segment] = []
    for step in steps:
        if found and found[-1].block == step.block:
            found[-1].steps.append(step)
        else:
            found.append(Segment(step.block, [step]))
    return found


# ----------------------------------------------------------------------------- drawing


def _draw_residual(ax, segment, x0, x1, y, height, used) -> None:
    units = segment.steps
    shown = units if len(units) <= MAX_ARCS else units[: MAX_ARCS - 1] + units[-1:]
    width = (x1 - x0) / len(shown)
    any_arc = False
    for i, step in enumerate(shown):
        kind = shortcut_kind(step)
        if kind is None:
            continue
        any_arc = True
        used.add(kind)
        ax.add_patch(patches.Arc(
            (x0 + (i + 0.5) * width, y), width * 0.92, height * 2, theta1=0, theta2=180,
            linestyle=SHORTCUT_STYLE.get(kind, "-"), linewidth=1.1, color="#1f4e79"))
    if any_arc and len(units) > len(shown):
        ax.text((x0 + x1) / 2, y + height + 0.06, f"{len(units)} units", ha="center", va="bottom",
                fontsize=6, color="#1f4e79")
    if not any_arc:
        # Plain units (no shortcut): ticks mark where each unit starts.
        for i in range(len(shown) + 1):
            ax.plot([x0 + i * width] * 2, [y, y + 0.12], color="#555555", linewidth=0.8)
        used.add("plain")


def _draw_dense(ax, segment, x0, x1, y, height, used) -> None:
    layers = sum(int(s.fields.get("layers", 0)) for s in segment.steps)
    nodes = min(layers, MAX_DENSE_NODES - 1) + 1  # the block input and its layers
    xs = [x0 + (x1 - x0) * (0.04 + 0.92 * i / max(nodes - 1, 1)) for i in range(nodes)]
    span = xs[-1] - xs[0] or 1.0
    for i in range(nodes):
        for j in range(i + 1, nodes):
            ax.add_patch(patches.Arc(
                ((xs[i] + xs[j]) / 2, y), xs[j] - xs[i], 2 * height * (xs[j] - xs[i]) / span,
                theta1=0, theta2=180, linewidth=0.7, color="#2e7d32", alpha=0.85))
    ax.scatter(xs, [y] * nodes, s=9, color="#2e7d32", zorder=4)
    label = f"{layers} layers" + (f", {nodes - 1} drawn" if layers > nodes - 1 else "")
    ax.text((x0 + x1) / 2, y + height + 0.06, label, ha="center", va="bottom", fontsize=6, color="#2e7d32")
    used.add("dense")


def _draw_inception(ax, segment, x0, x1, y, height, used) -> None:
    modules = segment.count
    shown = min(modules, 4)
    width = (x1 - x0) / shown
    for i in range(shown):
        a, b = x0 + (i + 0.08) * width, x0 + (i + 0.92) * width
        for level in (0.35, 0.6, 0.85, 1.0):  # four parallel branches, concatenated
            ax.add_patch(patches.Arc(((a + b) / 2, y), b - a, 2 * height * level, theta1=0, theta2=180,
                                     linewidth=0.7, color="#6a1b9a"))
    if modules > shown:
        ax.text((x0 + x1) / 2, y + height + 0.06, f"{modules} modules", ha="center", va="bottom",
                fontsize=6, color="#6a1b9a")
    used.add("inception")


def check_image_path(path) -> Path:
    """`path` if its suffix names an image format matplotlib writes, else CnnBuilderError."""
    path = Path(path)
    supported = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in supported:
        raise CnnBuilderError(
            f"cannot write a diagram to {path}: the suffix {path.suffix or '(none)'} is not an image "
            f"format matplotlib writes; use one of {', '.join('.' + k for k in sorted(supported))}."
        )
    return path


def plot_architecture(plan, stages, path, *, title: str = "", cost: str = "macs") -> Path:
    """Draw `stages` (from `cnnbuilder.model.summary.summarize`) of `plan` as a block diagram
    and save it to `path` (the format follows the suffix: .png, .svg, .pdf ...)."""
    path = Path(path)
    stages = list(stages)
    if not stages:
        raise CnnBuilderError("nothing to draw: the model has no stages.")
    values = [getattr(s, cost) for s in stages]
    sized = all(d is not None for d in plan.input_shape[:2])
    if cost == "macs" and not sized or not any(values):  # multiply-adds need a fixed input size
        cost, values = "params", [s.params for s in stages]
    top = max(values) or 1
    cost_name = "multiply-adds per image" if cost == "macs" else "parameters"

    steps_of: dict[str, list] = {}
    for step in plan.steps:
        steps_of.setdefault(step.stage, []).append(step)

    columns = len(stages)
    col_w, box_w = 2.6, 1.9
    h_min, h_max = 0.35, 2.0
    arc_h = 0.75
    text_lines = []
    for summary in stages:
        segments = [s for s in segments_of(steps_of.get(summary.name, [])) if s.block not in HIDDEN]
        residual = [s for s in segments if s.block in RESIDUAL]
        details = {residual_detail(s) for s in residual}
        shared = len(residual) > 1 and len(details) == 1
        labels = [segment_label(s, with_detail=not shared) for s in segments] or [summary.blocks_text]
        if shared and details != {""}:
            labels.append(f"({details.pop()})")
        lines = []
        for label in labels:
            lines += textwrap.wrap(label, 24) or [""]
        shape = "×".join("?" if d is None else str(d) for d in summary.output_shape)
        lines += [f"→ {shape}", f"{summary.params:,} params"]
        if sized:
            lines.append(f"{format_count(summary.macs)} mult-adds")
        text_lines.append((segments, lines))
    most_lines = max(len(lines) for _, lines in text_lines)

    fig_w = max(7.0, 2.0 * columns + 1.6)
    fig_h = 3.6 + 0.16 * most_lines
    figure = Figure(figsize=(fig_w, fig_h), constrained_layout=True)
    ax = figure.subplots()
    cmap = matplotlib.colormaps[COLORMAP]
    norm = Normalize(vmin=0, vmax=top)
    used: set[str] = set()
    hatched = False

    for index, (summary, value, (segments, lines)) in enumerate(zip(stages, values, text_lines)):
        cx = index * col_w
        height = h_min + (h_max - h_min) * math.sqrt(max(value, 0) / top)
        x0, x1 = cx - box_w / 2, cx + box_w / 2
        y0, y1 = -height / 2, height / 2
        color = cmap(0.12 + 0.88 * norm(value))
        ax.add_patch(patches.FancyBboxPatch((x0, y0), box_w, height, boxstyle="round,pad=0.0,rounding_size=0.06",
                                            facecolor=color, edgecolor="#333333", linewidth=1.0, zorder=2))
        # Segments: split the box in proportion to their weights; connectivity above each.
        total = sum(s.weight for s in segments) or 1.0
        sx = x0
        for k, segment in enumerate(segments):
            sw = box_w * segment.weight / total
            if segment.block in DOWNSAMPLING:
                ax.add_patch(patches.Rectangle((sx, y0), sw, height, facecolor="none", edgecolor="#333333",
                                               hatch="////", linewidth=0, zorder=3))
                hatched = True
            if k:
                ax.plot([sx, sx], [y0, y1], color="white", linewidth=1.2, zorder=3)
            if segment.block in RESIDUAL:
                _draw_residual(ax, segment, sx, sx + sw, y1, arc_h * 0.55, used)
            elif segment.block == "dense":
                _draw_dense(ax, segment, sx, sx + sw, y1, arc_h, used)
            elif segment.block == "inception":
                _draw_inception(ax, segment, sx, sx + sw, y1, arc_h * 0.6, used)
            sx += sw
        # Flow arrow to the next box.
        if index + 1 < columns:
            ax.annotate("", xy=(cx + col_w - box_w / 2 - 0.04, 0), xytext=(x1 + 0.04, 0),
                        arrowprops=dict(arrowstyle="-|>", color="#333333", linewidth=1.0), zorder=1)
        ax.text(cx, h_max / 2 + arc_h + 0.45, summary.name, ha="center", va="bottom", fontsize=9,
                fontweight="bold")
        ax.text(cx, -h_max / 2 - 0.15, "\n".join(lines), ha="center", va="top", fontsize=7,
                linespacing=1.25)

    ax.set_xlim(-col_w / 2, (columns - 0.5) * col_w)
    ax.set_ylim(-h_max / 2 - 0.3 - 0.2 * most_lines, h_max / 2 + arc_h + 0.95)
    ax.axis("off")

    total_params = sum(s.params for s in stages)
    total_macs = sum(s.macs for s in stages)
    shape = "×".join("?" if d is None else str(d) for d in plan.input_shape)
    heading = f"{title or plan.name} — input {shape}, {total_params:,} parameters"
    if total_macs and sized:
        heading += f", {format_count(total_macs)} multiply-adds per image"
    ax.set_title(heading, fontsize=10)

    scalar = ScalarMappable(norm=norm, cmap=cmap)
    bar = figure.colorbar(scalar, ax=ax, fraction=0.025, pad=0.01, shrink=0.7)
    bar.set_label(f"box height and colour: {cost_name}", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v)))

    handles = []
    for kind in ("identity", "projection", "pad"):
        if kind in used:
            handles.append(Line2D([], [], color="#1f4e79", linestyle=SHORTCUT_STYLE[kind], label=SHORTCUT_LABEL[kind]))
    if "plain" in used:
        handles.append(Line2D([], [], color="#555555", marker="|", linestyle="none", label="plain units (no shortcut)"))
    if "dense" in used:
        handles.append(Line2D([], [], color="#2e7d32", marker="o", markersize=3,
                              label="dense connections (each layer reads all earlier maps)"))
    if "inception" in used:
        handles.append(Line2D([], [], color="#6a1b9a", label="inception branches, concatenated"))
    if hatched:
        handles.append(patches.Patch(facecolor="white", edgecolor="#333333", hatch="////",
                                     label="downsampling (pool / transition)"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.0), ncol=min(len(handles), 3),
                  fontsize=7, frameon=False)

    try:
        check_image_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    except OSError as exc:
        raise CnnBuilderError(f"cannot write a diagram to {path}: {exc.strerror or exc}.") from None
    return path
