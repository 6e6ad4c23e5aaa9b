"""The live terminal view of `rollstream up` (rich): per-stage rates, lag, drops, versions;
reward and held-out accuracy over time; progress toward the run's target."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rollstream.services.up.scrape import by_label, total

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: float = 0.0, hi: float = 1.0, width: int = 40) -> str:
    vals = values[-width:]
    if not vals:
        return ""
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(7, max(0, int((v - lo) / span * 7.999)))] for v in vals)


WIDE = 130
"""Narrower than this, the notes go on lines of their own under the table (as a column they
wrapped word by word at 80 columns)."""


class StageRows:
    """The per-stage table, laid out for the width it is drawn at."""

    def __init__(self, stages: dict[str, dict[str, Any]]) -> None:
        self.stages = stages

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= WIDE
        yield stage_rows(self.stages, notes=wide)
        if not wide:
            for name, s in self.stages.items():
                if not name.startswith("_") and s["notes"]:
                    yield Text.assemble("  ", (f"{name}:", "bold"), " ", s["notes"])


def per_task_text(per_task: dict[str, float], sep: str = " ") -> str:
    """Held-out accuracy per task as the live view, the progress line and `--mode sync` say
    it: "count 53.0% reverse 23.0% sort 35.0%"."""
    return sep.join(f"{k} {v:.1%}" for k, v in sorted(per_task.items()))


def stage_rows(stages: dict[str, dict[str, Any]], notes: bool = True) -> Table:
    t = Table(expand=True, box=None, header_style="bold")
    cols = ["stage", "procs", "restarts", "in/s", "out/s", "lag", "dead letters", "version"]
    if notes:
        cols.append("notes")
    for col in cols:
        t.add_column(col, justify="left" if col in ("stage", "notes") else "right")
    restarts = stages.get("_restarts", {})
    for name, s in stages.items():
        if name.startswith("_"):
            continue
        n = sum(v for k, v in restarts.items() if k.rsplit("-", 1)[0] == name)
        t.add_row(
            name,
            s["procs"],
            Text(str(n), style="bold red") if n else "0",
            f"{s['in_rate']:.1f}",
            f"{s['out_rate']:.1f}",
            f"{s['lag']:.0f}",
            f"{s['dlq']:.0f}",
            s["version"],
            *([s["notes"]] if notes else []),
        )
    return t


def summarize_stage(stage: str, snap: dict[str, float], rates: dict[str, float]) -> dict[str, Any]:
    p = f"rollstream_{stage}_"
    notes = []
    out: dict[str, Any] = {}
    drops = by_label(snap, p + "dropped_rollouts_total", "reason")  # replay
    for k, v in by_label(snap, p + "samples_dropped_total", "reason").items():  # filter
        drops[k] = drops.get(k, 0.0) + v
    if drops:  # in rollouts, as the progress line and the ledger count them
        notes.append(
            "dropped rollouts " + " ".join(f"{k}={v:.0f}" for k, v in sorted(drops.items()))
        )
    if stage == "generator":
        paused = total(snap, p + "paused_seconds_total")
        notes.append(f"tok/s {rates.get('tokens', 0):.0f} paused {paused:.0f}s")
        if p + "idle_ratio" in snap:
            notes.append(f"idle {total(snap, p + 'idle_ratio'):.0%}")
    if stage == "learner":
        out["step"] = total(snap, p + "step")
        notes.append(f"step {out['step']:.0f} loss {total(snap, p + 'loss'):.3f}")
        if p + "idle_ratio" in snap:
            notes.append(f"idle {total(snap, p + 'idle_ratio'):.0%}")
    if stage == "replay":
        notes.append(
            f"buffer {total(snap, p + 'buffer_groups'):.0f} groups, "
            f"{total(snap, p + 'expired_groups_total'):.0f} expired"
        )
        # the bound's own definition: learner version - group version at hand-out
        if total(snap, p + "staleness_versions_count"):
            out["staleness"] = total(snap, p + "staleness_versions_sum") / total(
                snap, p + "staleness_versions_count"
            )
            notes.append(f"staleness {out['staleness']:.2f} (at hand-out)")
    version = total(snap, p + "policy_version")
    return {
        **out,
        "drops": sum(v for k, v in drops.items() if k != "expired"),
        "expired": drops.get("expired", 0.0),  # as the ledger: expired apart from dropped
        "in_rate": rates.get("in", 0.0),
        "out_rate": rates.get("out", 0.0),
        "lag": total(snap, p + "consumer_lag_messages"),
        "dlq": total(snap, p + "dead_letters_total"),
        "version": f"{version:.0f}" if (p + "policy_version") in snap else "-",
        "notes": "; ".join(notes),
    }


def render(
    title: str,
    stages: dict[str, dict[str, Any]],
    accuracy: list[tuple[float, float]],
    reward: list[float],
    progress: float,
    progress_label: str,
    per_task: dict[str, float] | None = None,
) -> Panel:
    acc_vals = [a for _, a in accuracy]
    acc_line = Text(
        f"held-out accuracy {acc_vals[-1]:.1%} " if acc_vals else "held-out accuracy - "
    )
    acc_line.append(sparkline(acc_vals), style="green")
    if acc_vals:
        acc_line.append(f"  (start {acc_vals[0]:.1%}, best {max(acc_vals):.1%})")
    if per_task:
        acc_line.append("\n  per task: " + per_task_text(per_task, "  "))
    rew_line = Text(f"reward mean       {reward[-1]:.3f} " if reward else "reward mean       - ")
    rew_line.append(sparkline(reward), style="cyan")
    bar = ProgressBar(total=1.0, completed=min(1.0, progress), width=50)
    errors = Text("")
    for name, lines in stages.get("_errors", {}).items():
        errors.append(f"{name} failed:\n", style="bold red")
        errors.append("".join(f"  {x}\n" for x in lines[-4:]), style="red")
    return Panel(
        Group(
            StageRows(stages),
            errors,
            acc_line,
            rew_line,
            Group(Text(progress_label), bar),
        ),
        title=title,
    )
