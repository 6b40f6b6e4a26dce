"""Pictures of an explanation: the prompt with each unit shaded by its relevance (HTML and PNG).

Red: suppressing the unit raised the target's loss (the prediction relied on it); blue: it lowered
the loss. Shading is relative to the largest absolute relevance of the explanation.
"""

from __future__ import annotations

import html
from pathlib import Path

from optimum_subnet.explain.explainer import Explanation


def _pieces(explanation: Explanation) -> list[tuple[str, float | None]]:
    """The prompt cut into (text, relevance) pieces; text between units has relevance None."""
    pieces, cursor = [], 0
    for unit in sorted(explanation.units, key=lambda u: u.start):
        if unit.start > cursor:
            pieces.append((explanation.prompt[cursor:unit.start], None))
        if unit.end > max(cursor, unit.start):
            pieces.append((explanation.prompt[max(cursor, unit.start):unit.end], unit.relevance))
        cursor = max(cursor, unit.end)
    if cursor < len(explanation.prompt):
        pieces.append((explanation.prompt[cursor:], None))
    return pieces


def _scale(explanation: Explanation) -> float:
    return max((abs(u.relevance) for u in explanation.units), default=0.0) or 1.0


def relevance_rgb(relevance: float, scale: float) -> tuple[float, float, float]:
    """White at 0, saturating to red (positive) or blue (negative) at ``|relevance| = scale``."""
    t = max(-1.0, min(1.0, relevance / scale))
    if t >= 0:
        return 1.0, 1.0 - 0.75 * t, 1.0 - 0.75 * t
    return 1.0 + 0.75 * t, 1.0 + 0.75 * t, 1.0


def render_html(explanation: Explanation) -> str:
    scale = _scale(explanation)
    spans = []
    for text, relevance in _pieces(explanation):
        body = html.escape(text).replace("\n", "<br>\n")
        if relevance is None:
            spans.append(body)
            continue
        r, g, b = (round(255 * c) for c in relevance_rgb(relevance, scale))
        spans.append(f'<span style="background: rgb({r},{g},{b})" title="{relevance:+.4f}">{body}</span>')
    top = "".join(f"<li><code>{html.escape(u.text)}</code> {u.relevance:+.4f}</li>" for u in explanation.top(5))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>AtMan explanation</title></head>\n"
        "<body style=\"font-family: sans-serif; max-width: 60em\">\n"
        f"<p><b>Target:</b> <code>{html.escape(explanation.target)}</code> (loss {explanation.target_loss:.4f}; "
        f"granularity {html.escape(explanation.granularity)}). Red: relied on; blue: worked against; "
        "hover for the relevance (change of the target's cross-entropy when suppressed).</p>\n"
        f"<p style=\"font-family: monospace; line-height: 1.8; white-space: pre-wrap\">{''.join(spans)}</p>\n"
        f"<p><b>Most relevant:</b></p><ol>{top}</ol>\n</body></html>\n"
    )


def render_png(explanation: Explanation, path: str | Path, width_chars: int = 80) -> None:
    """Monospace layout (so widths need no font metrics), wrapped at ``width_chars`` characters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    scale = _scale(explanation)
    lines: list[list[tuple[str, float | None]]] = [[]]
    column = 0
    for text, relevance in _pieces(explanation):
        for part_index, part in enumerate(text.split("\n")):
            if part_index:
                lines.append([])
                column = 0
            while part:
                room = width_chars - column
                if room <= 0:
                    lines.append([])
                    column, room = 0, width_chars
                lines[-1].append((part[:room], relevance))
                column += len(part[:room])
                part = part[room:]
    fontsize = 10
    char_w, line_h = 0.602 * fontsize / 72, 0.3  # inches; DejaVu Sans Mono advances 0.602 em per glyph
    header = 2
    fig_w = width_chars * char_w + 0.6
    fig_h = (len(lines) + header + 1) * line_h + 0.3
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)
    ax.axis("off")
    ax.text(0.3, 0.3 + 0.5 * line_h, f"target: {explanation.target!r}   (red: relied on, blue: against; "
            f"max |relevance| {scale:.3g})", fontsize=9, family="DejaVu Sans", va="center", parse_math=False)
    for row, line in enumerate(lines):
        y = 0.3 + (row + header) * line_h
        x = 0.3
        for text, relevance in line:
            w = len(text) * char_w
            if relevance is not None and text:
                ax.add_patch(Rectangle((x, y - 0.02), w, line_h * 0.9, color=relevance_rgb(relevance, scale), lw=0))
            ax.text(x, y + line_h * 0.45, text, fontsize=fontsize, family="DejaVu Sans Mono", va="center",
                    parse_math=False)
            x += w
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_explanation(explanation: Explanation, folder: str | Path) -> dict[str, Path]:
    """``explanation.json``, ``explanation.html`` and ``explanation.png`` in ``folder``."""
    from optimum_subnet.core.files import write_json

    folder = Path(folder)
    paths = {"json": folder / "explanation.json", "html": folder / "explanation.html",
             "png": folder / "explanation.png"}
    write_json(paths["json"], explanation.to_dict())
    paths["html"].write_text(render_html(explanation), encoding="utf-8")
    render_png(explanation, paths["png"])
    return paths
