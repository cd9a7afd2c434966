"""The timeline picture of one scenario: every request as a line, pod events as marks.

A reviewer sees at a glance which requests a pod event cut (the lines that turn
red right after "SIGTERM user-container"). Pure: data in, PNG out; no pytest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..load.records import RequestRecord
from ..run import verdict

if TYPE_CHECKING:
    from ..run.runner import ScenarioResult

#: outcome class -> colour (ok green, 5xx red, transport errors orange/purple, truncated brown)
COLOURS = {
    "ok": "#2ca02c",
    "http_5xx": "#d62728",
    "http_other": "#e377c2",
    "reset": "#ff7f0e",
    "empty_reply": "#9467bd",
    "refused": "#bcbd22",
    "timeout": "#7f7f7f",
    "truncated": "#8c564b",
    "protocol_error": "#17becf",
}
#: pod events drawn as vertical marks (prefix match), with their colour
MARKED_EVENTS = (
    ("delete", "black"),
    ("preStop returned", "#1f77b4"),
    ("SIGTERM user-container", "#d62728"),
    ("SIGKILL", "#9467bd"),
    ("gone", "#555555"),
)


def timeline_data(result: ScenarioResult | Mapping[str, Any]) -> dict[str, Any]:
    """Requests and marked events in seconds from the pod delete (t0), ready to draw.

    Accepts a ``ScenarioResult`` or a mapping with ``records`` (``RequestRecord``
    dicts), ``events`` (dicts with ``name`` and ``mono``) and ``t0_mono``: the
    requests file attached to allure, so the picture can be redrawn from evidence.
    """
    if isinstance(result, Mapping):
        records = [RequestRecord.from_dict(r) for r in result.get("records", [])]
        events = [dict(e) for e in result.get("events", [])]
        t0 = result.get("t0_mono")
        title = f"{result.get('scenario', '?')} / {result.get('app', '?')}"
    else:
        records = list(result.records)
        events = [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in result.events]
        t0 = result.t0_mono
        title = f"{result.scenario} / {result.app}"
    if t0 is None:
        deletes = [e["mono"] for e in events if e.get("name") == "delete"]
        sent = [r.sent_mono for r in records if r.sent_mono is not None]
        t0 = deletes[0] if deletes else (min(sent) if sent else 0.0)
    lines = []
    for r in records:
        start = r.sent_mono if r.sent_mono is not None else r.finished_mono
        if start is None:
            continue  # never sent and never ended: counted as missing, nothing to draw
        end = r.finished_mono if r.finished_mono is not None else start
        lines.append((start - t0, end - t0, verdict.judge(r).cls, r.id))
    lines.sort(key=lambda x: (x[0], x[3]))
    marks = []
    for e in events:
        name = str(e.get("name", ""))
        colour = next((c for prefix, c in MARKED_EVENTS if name.startswith(prefix)), None)
        if colour is not None and e.get("mono") is not None:
            marks.append((e["mono"] - t0, name, colour))
    return {"title": title, "lines": lines, "marks": marks}


def render_timeline(result: ScenarioResult | Mapping[str, Any], path: Path | str) -> Path:
    """Draw the scenario's timeline to ``path`` (PNG, Agg backend) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    data = timeline_data(result)
    lines, marks = data["lines"], data["marks"]
    n = len(lines)
    height = min(12.0, max(4.0, 2.5 + n * 0.02))
    fig = Figure(figsize=(12, height), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    segments = [((s, i), (e, i)) for i, (s, e, _, _) in enumerate(lines)]
    colours = [COLOURS.get(cls, "black") for _, _, cls, _ in lines]
    width = 2.0 if n <= 100 else (1.0 if n <= 400 else 0.5)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=width))
    xs = [x for s, e, _, _ in lines for x in (s, e)] + [m[0] for m in marks] + [0.0]
    lo, hi = min(xs), max(xs)
    pad = max((hi - lo) * 0.03, 0.5)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-1, max(n, 1) * 1.15 + 2)  # headroom for the event labels
    # vertical marks; labels staggered so coinciding events (delete, SIGTERM qp) stay legible
    placed: list[float] = []
    for x, name, colour in sorted(marks):
        ax.axvline(x, color=colour, linestyle="--", linewidth=1.2)
        near = sum(1 for p in placed if abs(p - x) < (hi - lo) * 0.06)
        placed.append(x)
        ax.text(
            x,
            1.0 - 0.06 * near,
            f" {name} ({x:+.1f} s)",
            transform=ax.get_xaxis_transform(),
            rotation=0,
            va="top",
            ha="left",
            fontsize=8,
            color=colour,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
        )
    counts = Counter(cls for _, _, cls, _ in lines)
    handles = [
        Line2D([0], [0], color=COLOURS.get(cls, "black"), linewidth=3, label=f"{cls} ({count})")
        for cls, count in sorted(counts.items(), key=lambda kv: list(COLOURS).index(kv[0]))
    ]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_xlabel("seconds from pod delete")
    ax.set_ylabel("request (by send time)")
    ax.set_title(f"{data['title']}: {n} requests", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
