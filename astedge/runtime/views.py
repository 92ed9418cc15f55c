"""What the terminal shows: rich renderables for the live view (the CLI prints them)."""

from __future__ import annotations

from astedge.runtime.windows import WindowResult


def render(result: WindowResult | None, summary: dict, title: str = ""):
    """A rich renderable of the latest window: top labels with score bars, latency, running counts."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, padding=(0, 1), expand=False)
    table.add_column("label", no_wrap=True, max_width=40)
    table.add_column("bar", no_wrap=True)
    table.add_column("score", justify="right")
    width = 30
    if result is None:
        header = Text(f"{title}  waiting for the first window...", style="dim")
    else:
        header = Text(f"{title}  {result.start:7.2f}-{result.end:7.2f} s  latency {result.latency_ms:6.1f} ms")
        for score in result.top:
            filled = int(round(max(0.0, min(1.0, score.score)) * width))
            table.add_row(escape(score.label), Text("█" * filled + "·" * (width - filled), style="green"),
                          f"{score.score:.3f}")
    p = summary.get("inference_ms") or {}
    footer = Text(f"heard {summary['audio_s']:.1f} s · windows {summary['windows']} · dropped {summary['dropped']} · "
                  f"overflows {summary['overflows']}" + (f" · inference p50 {p['p50']:.1f} ms" if p else "") +
                  " · Ctrl-C stops", style="dim")
    return Group(header, table, footer)
