"""The picture of a :class:`~boundkit.watch.WatchReport`: SVG, HTML or PNG.

SVG and HTML are written here with the standard library (no import cost);
PNG needs matplotlib (``pip install 'boundkit[plot]'``), imported only then.
Each shows the samples, the fitted trend after the warm-up, the guard's
warning and critical thresholds and the limit, with the verdict in the title.
"""

from __future__ import annotations

import html
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .watch import WatchReport

__all__ = ["PLOT_SUFFIXES", "check_plot_path", "render_html", "render_svg", "write_plot"]

#: The file name suffixes :func:`write_plot` understands.
PLOT_SUFFIXES = (".png", ".svg", ".html", ".htm")

_MB = 1024 * 1024
_W, _H = 800, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 50, 50
#: The guard's default thresholds, as fractions of the limit.
THRESHOLDS = (("warning", 0.80, "#d68a00"), ("critical", 0.90, "#c62828"))
_SAMPLES, _TREND, _LIMIT = "#1f5fa8", "#2e7d32", "#6a1b9a"


def _title(report: WatchReport) -> str:
    text = f"{report.target}: {report.verdict}"
    if report.rate is not None and report.rate_low is not None and report.rate_high is not None:
        per_min = 60 / _MB
        text += (
            f", {report.rate * per_min:+.2f} MiB/min"
            f" (95% {report.rate_low * per_min:+.2f} to {report.rate_high * per_min:+.2f})"
        )
    if report.time_to_limit is not None:
        text += f", limit in {report.time_to_limit / 60:.0f} min"
    return text


@dataclass(frozen=True)
class _Frame:
    """Data ranges in seconds and MiB, and which lines are on scale."""

    t_max: float
    y_min: float
    y_max: float
    lines: list[tuple[str, float, str]]

    @classmethod
    def of(cls, report: WatchReport) -> _Frame:
        values = [s.rss / _MB for s in report.samples]
        limit = report.limit / _MB
        lines = [(name, limit * share, colour) for name, share, colour in THRESHOLDS]
        lines.append(("limit", limit, _LIMIT))
        low, high = min(values), max(values)
        # show the limit when it is within reach of the data; else mark it off scale
        if limit <= 2.5 * high:
            high = max(high, limit)
        pad = max((high - low) * 0.08, 1.0)
        return cls(
            t_max=max(report.samples[-1].t, 1e-9),
            y_min=max(low - pad, 0.0),
            y_max=high + pad,
            lines=lines,
        )

    def x(self, t: float) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * t / self.t_max

    def y(self, mb: float) -> float:
        return _H - _BOTTOM - (_H - _TOP - _BOTTOM) * (mb - self.y_min) / (self.y_max - self.y_min)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / count
    step = min(
        (m * 10**e for e in range(-2, 8) for m in (1, 2, 5) if m * 10**e >= raw),
        default=raw,
    )
    first = -(-low // step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def render_svg(report: WatchReport) -> str:
    """Return the plot of ``report`` as a standalone SVG document."""
    if not report.samples:
        raise ConfigError("cannot plot a watch with no samples")
    frame = _Frame.of(report)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">'
        f"{html.escape(_title(report))}</text>",
    ]
    left, right = _LEFT, _W - _RIGHT
    top, bottom = _TOP, _H - _BOTTOM
    if report.warmup_seconds > 0:
        out.append(
            f'<rect x="{left}" y="{top}" width="{frame.x(report.warmup_seconds) - left:.1f}" '
            f'height="{bottom - top}" fill="#eeeeee"/>'
            f'<text x="{left + 4}" y="{top + 14}" fill="#777">warm-up</text>'
        )
    for mb in _ticks(frame.y_min, frame.y_max):
        y = frame.y(mb)
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{mb:g}</text>'
        )
    minutes = frame.t_max >= 180
    for t in _ticks(0, frame.t_max / 60 if minutes else frame.t_max):
        x = frame.x(t * 60 if minutes else t)
        out.append(f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{t:g}</text>')
    out.append(
        f'<text x="{(left + right) / 2}" y="{_H - 12}" text-anchor="middle">'
        f"time ({'min' if minutes else 's'})</text>"
        f'<text x="16" y="{(top + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + bottom) / 2})">resident memory (MiB)</text>'
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        f'fill="none" stroke="#333"/>'
    )
    for name, mb, colour in frame.lines:
        label = f"{name} {mb:.0f} MiB"
        if mb <= frame.y_max:
            y = frame.y(mb)
            out.append(
                f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                f'stroke-dasharray="6 4" stroke-width="1.5"/>'
                f'<text x="{right - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{colour}">'
                f"{label}</text>"
            )
        elif name == "limit":
            out.append(
                f'<text x="{right - 4}" y="{top + 14}" text-anchor="end" fill="{colour}">'
                f"{label} (above the scale)</text>"
            )
    points = " ".join(f"{frame.x(s.t):.1f},{frame.y(s.rss / _MB):.1f}" for s in report.samples)
    out.append(f'<polyline points="{points}" fill="none" stroke="{_SAMPLES}" stroke-width="1.5"/>')
    if report.rate is not None and report.trend_intercept is not None:
        t0 = report.warmup_seconds
        ends = [(t, (report.trend_intercept + report.rate * t) / _MB) for t in (t0, frame.t_max)]
        out.append(
            f'<line x1="{frame.x(ends[0][0]):.1f}" y1="{frame.y(ends[0][1]):.1f}" '
            f'x2="{frame.x(ends[1][0]):.1f}" y2="{frame.y(ends[1][1]):.1f}" '
            f'stroke="{_TREND}" stroke-width="2.5"/>'
        )
    legend = [("samples", _SAMPLES), ("trend (Theil-Sen)", _TREND)]
    for i, (name, colour) in enumerate(legend):
        x = left + 10 + i * 150
        out.append(
            f'<line x1="{x}" x2="{x + 20}" y1="{top - 10}" y2="{top - 10}" stroke="{colour}" '
            f'stroke-width="2.5"/><text x="{x + 25}" y="{top - 6}">{name}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(report: WatchReport) -> str:
    """Return a self-contained HTML page: the SVG plot and the report's figures."""
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in report.as_dict().items()
        if key != "samples"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(_title(report))}</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "</style></head><body>\n"
        f"{render_svg(report)}<table>{rows}</table>\n</body></html>\n"
    )


def _write_png(report: WatchReport, path: Path) -> None:
    try:  # imported by name: matplotlib is an optional extra that mypy may not see
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        raise ConfigError(
            "a PNG plot needs matplotlib: pip install 'boundkit[plot]' (or use .svg or .html)"
        ) from exc
    frame = _Frame.of(report)
    minutes = [s.t / 60 for s in report.samples]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        if report.warmup_seconds > 0:
            ax.axvspan(0, report.warmup_seconds / 60, color="#eeeeee", label="warm-up")
        ax.plot(minutes, [s.rss / _MB for s in report.samples], color=_SAMPLES, label="samples")
        if report.rate is not None and report.trend_intercept is not None:
            ts = [report.warmup_seconds, frame.t_max]
            ax.plot(
                [t / 60 for t in ts],
                [(report.trend_intercept + report.rate * t) / _MB for t in ts],
                color=_TREND,
                linewidth=2.5,
                label="trend (Theil-Sen)",
            )
        for name, mb, colour in frame.lines:
            if mb <= frame.y_max:
                ax.axhline(mb, color=colour, linestyle="--", label=f"{name} {mb:.0f} MiB")
        ax.set_ylim(frame.y_min, frame.y_max)
        ax.set_xlabel("time (min)")
        ax.set_ylabel("resident memory (MiB)")
        ax.set_title(_title(report), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _bad_suffix(path: str | os.PathLike[str]) -> str:
    return f"--plot must end in .png, .svg or .html, got {str(path)!r}"


def check_plot_path(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~boundkit.errors.ConfigError` now if ``path`` has no plot suffix."""
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(_bad_suffix(path))


def write_plot(report: WatchReport, path: str | os.PathLike[str]) -> Path:
    """Write the plot of ``report`` to ``path``; its suffix (.svg, .html, .png) picks the format."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".svg":
        target.write_text(render_svg(report), encoding="utf-8")
    elif suffix in (".html", ".htm"):
        target.write_text(render_html(report), encoding="utf-8")
    elif suffix == ".png":
        if not report.samples:
            raise ConfigError("cannot plot a watch with no samples")
        _write_png(report, target)
    else:
        raise ConfigError(_bad_suffix(path))
    return target
