"""What the `tao` commands print: results as rich tables, apart from the argument handling, so a
benchmark or a script shows a distill outcome exactly as `tao distill` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from distill.job import DistillOutcome
    from gateway.stats import PairedBound


def print_outcome(outcome: DistillOutcome, console: Console | None = None) -> None:
    """The eval table (when the run got that far), the data counts and the verdict, green when published."""
    console = console or Console()
    report = outcome.report
    if report is not None:
        table = Table(title=f"distill: {report.prompts} held-out prompts × {report.samples_per_prompt} samples")
        for column in ("", "mean reward", "bounds", "tokens/answer"):
            table.add_column(column, justify="right" if column else "left")
        table.add_row("base N=1 (logged)", f"{report.base_n1_logged:.4f}", "", "")
        table.add_row("base best-of-N (logged)", f"{report.base_best_of_n_logged:.4f}", "",
                      f"{report.base_tokens_per_answer_logged:.1f}")
        reference = "base" if report.reference == "base" else f"incumbent {report.reference}"
        table.add_row(f"{reference} N=1 (eval)", f"{report.base_n1:.4f}", "", "")
        table.add_row("new N=1 (eval)", f"{report.new_n1:.4f}", "", f"{report.new_tokens_per_answer:.1f}")
        table.add_row(f"new − {report.reference_arm} N=1", *_bounded(report.versus_base), "")
        table.add_row("new N=1 − best-of-N", *_bounded(report.versus_best_of_n), "")
        recovered, interval = report.gain_recovered, report.gain_recovered_interval
        table.add_row("best-of-N gain recovered", "n/a" if recovered is None else f"{recovered:.0%}",
                      "" if interval is None else f"[{interval[0]:.0%}, {interval[1]:.0%}]", "")
        console.print(table)
    if outcome.counts:
        console.print("data: " + ", ".join(f"{k} {v}" for k, v in outcome.counts.items()))
    console.print(outcome.message, style="green" if outcome.exit_code == 0 else "red")


def _bounded(bound: PairedBound) -> tuple[str, str]:
    """(mean, [lower, upper]) of a paired difference, over at least two prompts."""
    if bound.pairs < 2:
        return "n/a", ""
    return f"{bound.mean:+.4f}", f"[{bound.lower:+.4f}, {bound.upper:+.4f}]"


def print_rollouts(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    """`GET /admin/rollout`'s rollouts (or one `start`/`promote`/`rollback` reply): one line for a model
    without a rollout, a two-column table for each one with (it fits a terminal of any width)."""
    console = console or Console()
    for row in rows:
        if not row.get("state"):
            console.print(f"{row['model']}: no rollout (the incumbent has 100 %)")
            continue
        arms, tokens, pairs = row["arms_this_step"], row["tokens_per_request"], row["shadow_pairs"]
        after = "-" if tokens["after"] is None else f"{tokens['after']:.1f}"
        evidence = (f"{pairs['mean']:+.3f} [{pairs['lower']:+.3f}, {pairs['upper']:+.3f}]"
                    if pairs["lower"] is not None else "too few")
        table = Table(title=f"rollout of {row['model']}", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in (
            ("checkpoint", row["checkpoint_id"]),
            ("state", f"{row['state']}, candidate share {row['share']:g}%"),
            ("arms", f"incumbent best-of-{row['incumbent_best_of']}, candidate best-of-{row['candidate_best_of']} "
                     f"({row['saving']:g}× fewer answers)"),
            ("reward this step (n)", f"incumbent {arms['incumbent']['mean']:.3f} ({arms['incumbent']['scored']}), "
                                     f"candidate {arms['candidate']['mean']:.3f} ({arms['candidate']['scored']})"),
            ("shadow pairs", f"candidate − incumbent {evidence} over {pairs['units']} prompts ({pairs['pairs']} pairs); "
                             f"look {row['looks']}/{pairs['max_looks']} taken, the next at "
                             f"{pairs['prompts_for_next_look']} prompts"),
            ("tokens per request", f"this step: incumbent {arms['incumbent']['tokens_per_request']:.1f}, candidate "
                                   f"{arms['candidate']['tokens_per_request']:.1f}; before → after promotion: "
                                   f"{tokens['before']:.1f} → {after}"),
        ):
            table.add_row(name, value)
        console.print(table)
