"""A job's training curves as a standalone SVG, drawn in pure Python (no plotting library).

Loss is read on the left axis (from 0 to a round number above the largest loss),
accuracy on the right axis (0 to 100%), epochs along the bottom. Every piece of text
is escaped, so a model name cannot inject markup into the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from app.ml.metrics import EpochMetrics

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 72, 72, 52  # margins around the plot area
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
INK, MUTED, GRID = "#1f2328", "#57606a", "#d8dee4"
MAX_MARKERS = 40  # a dot per epoch up to this many epochs, then lines only


# (label, css class, colour, dash, on the accuracy axis, EpochMetrics field); the first two
# are always drawn (and named in the legend), the validation ones when a job has them
SERIES = (
    ("loss", "loss", "#0b5cad", None, False, "loss"),
    ("train char accuracy", "train-accuracy", "#b35c00", None, True, "train_char_accuracy"),
    ("val loss", "val-loss", "#0b5cad", "6 4", False, "val_loss"),
    ("val char accuracy", "val-accuracy", "#1a7f37", "6 4", True, "val_char_accuracy"),
)
ALWAYS = 2


@dataclass(frozen=True)
class Curve:
    label: str
    css_class: str
    color: str
    dash: str | None
    on_accuracy_axis: bool
    points: list[tuple[int, float]]  # (epoch, value), finite values only


def curves(history: Sequence[EpochMetrics]) -> list[Curve]:
    """The curves worth drawing: loss and train accuracy always, validation ones when present."""
    found = []
    for i, (label, css_class, color, dash, on_accuracy_axis, field) in enumerate(SERIES):
        values = ((e.epoch, getattr(e, field)) for e in history)
        points = [(x, y) for x, y in values if y is not None and math.isfinite(y)]
        if points or i < ALWAYS:
            found.append(Curve(label, css_class, color, dash, on_accuracy_axis, points))
    return found


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (1 for nothing to show)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def epoch_ticks(last: int) -> list[int]:
    """1, 3, 5 ... for short runs; 1 and round multiples (20, 40 ...) for long ones."""
    rough = last / 10
    power = 10 ** math.floor(math.log10(max(rough, 1)))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    if step <= 2:
        return list(range(1, last + 1, step))
    return [1, *range(step, last + 1, step)]


def number(value: float) -> str:
    return f"{value:.4g}"


def text(x: float, y: float, content: str, **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def job_plot_svg(history: Sequence[EpochMetrics], title: str) -> str:
    """An SVG document with the loss and accuracy curves of ``history``, one point per epoch."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom, right = TOP + plot_h, LEFT + plot_w
    drawn = curves(history)
    last_epoch = max((e.epoch for e in history), default=1)
    loss_top = nice_ceiling(
        max((y for c in drawn if not c.on_accuracy_axis for _, y in c.points), default=1.0)
    )

    def px(epoch: float) -> float:
        return (
            LEFT + plot_w / 2 if last_epoch == 1 else LEFT + (epoch - 1) / (last_epoch - 1) * plot_w
        )

    def py(value: float, accuracy: bool) -> float:
        top = 1.0 if accuracy else loss_top
        return bottom - max(0.0, min(value / top, 1.0)) * plot_h

    desc = f"{title}: loss and accuracy per epoch" if history else f"{title}: no epochs yet"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="plot-title" '
        f'font-family="{escape(FONT)}" font-size="12" fill="{INK}">',
        f'<title id="plot-title">{escape(desc)}</title>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        text(LEFT, 24, title, font_size="16", font_weight="600"),
    ]
    parts += axes(px, py, last_epoch, loss_top, plot_h, bottom, right)
    if not history:
        parts.append(
            text(
                LEFT + plot_w / 2,
                TOP + plot_h / 2,
                "No epochs yet",
                text_anchor="middle",
                fill=MUTED,
                font_size="14",
            )
        )
    for curve in drawn:
        parts += draw_curve(curve, px, py)
    parts += legend(drawn)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def axes(
    px: Callable[[float], float],
    py: Callable[[float, bool], float],
    last_epoch: int,
    loss_top: float,
    plot_h: float,
    bottom: float,
    right: float,
) -> list[str]:
    parts = [f'<g class="grid" stroke="{GRID}" stroke-width="1">']
    for i in range(5):
        y = py(i / 4, True)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
    parts.append("</g>")
    parts.append(f'<g class="axes" stroke="{INK}" stroke-width="1">')
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>')
    parts.append(f'<line x1="{right}" y1="{TOP}" x2="{right}" y2="{bottom}"/>')
    parts.append("</g>")
    parts.append(f'<g class="ticks" fill="{MUTED}">')
    for epoch in epoch_ticks(last_epoch):
        parts.append(text(px(epoch), bottom + 18, str(epoch), text_anchor="middle"))
    for i in range(5):
        y = py(i / 4, True) + 4
        parts.append(text(LEFT - 8, y, number(loss_top * i / 4), text_anchor="end"))
        parts.append(text(right + 8, y, f"{i * 25}%"))
    parts.append("</g>")
    middle = TOP + plot_h / 2
    parts += [
        text((LEFT + right) / 2, bottom + 40, "epoch", text_anchor="middle", class_="axis-label"),
        text(
            18,
            middle,
            "loss",
            text_anchor="middle",
            class_="axis-label",
            transform=f"rotate(-90 18 {middle:.1f})",
        ),
        text(
            WIDTH - 14,
            middle,
            "accuracy",
            text_anchor="middle",
            class_="axis-label",
            transform=f"rotate(90 {WIDTH - 14} {middle:.1f})",
        ),
    ]
    return parts


def draw_curve(
    curve: Curve, px: Callable[[float], float], py: Callable[[float, bool], float]
) -> list[str]:
    if not curve.points:
        return []
    coords = [(px(x), py(y, curve.on_accuracy_axis)) for x, y in curve.points]
    dash = f' stroke-dasharray="{curve.dash}"' if curve.dash else ""
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts = [
        f'<g class="curve {curve.css_class}" stroke="{curve.color}" fill="{curve.color}">',
        f'<polyline points="{points}" fill="none" stroke-width="2"{dash}/>',
    ]
    if len(coords) <= MAX_MARKERS:
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in coords]
    parts.append("</g>")
    return parts


def legend(drawn: list[Curve]) -> list[str]:
    parts = ['<g class="legend">']
    x = float(LEFT)
    for curve in drawn:
        dash = f' stroke-dasharray="{curve.dash}"' if curve.dash else ""
        parts.append(
            f'<line x1="{x:.1f}" y1="46" x2="{x + 24:.1f}" y2="46" stroke="{curve.color}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(text(x + 30, 50, curve.label))
        x += 40 + 7 * len(curve.label)
    parts.append("</g>")
    return parts
