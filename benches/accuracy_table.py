"""Markdown tables of ``benches/accuracy.py``'s result files: per task, each glora recipe's mean over tasks, and
the search's margin over random feasible subnets.

    python benches/accuracy_table.py movie nyt image     # reads results/accuracy_<task>_gpu.json

A recipe variant is matched across tasks by its changed settings with the step counts read relative to the task's
schedule (``finetune_steps=320`` on a 640-step task is ``finetune_steps=steps/2``), so that one recipe has one row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from accuracy import final_validation_accuracy, recipe_of
from common import RESULTS

NAMES = {
    "glora": "glora (default recipe)",
    "peft_lora": "PEFT LoRA",
    "peft_dora": "PEFT DoRA",
    "peft_adalora": "PEFT AdaLoRA",
    "peft_lora_all": "PEFT LoRA, every target",
    "peft_dora_all": "PEFT DoRA, every target",
    "full": "full fine-tuning",
}


def load(task: str, device: str) -> dict[str, Any]:
    with open(os.path.join(RESULTS, f"accuracy_{task}_{device}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def recipe_name(method: str, steps: int) -> str:
    """``method``'s recipe with step counts relative to the task's ``steps`` (see the module docstring)."""
    if method == "glora" or not method.startswith("glora"):
        return method
    parts = []
    for key, value in recipe_of(method).items():
        relative = key.endswith("steps") and isinstance(value, int) and value > 0
        parts.append(f"{key}=steps*{value / steps:g}" if relative else f"{key}={value}")
    return "glora:" + ",".join(parts)


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def task_table(task: str, result: dict[str, Any]) -> list[str]:
    summary = result["figures"]["summary"]
    first = summary[0]["method"]  # the paired differences are to the first method listed
    lines = [
        f"{task} (`accuracy_{task}_gpu.json`):",
        "",
        f"| method | lr | adapter parameters | test accuracy, mean ± std (%) | {first} minus it, paired (points) | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary:
        name = NAMES.get(row["method"], f"`{row['method']}`")
        diff, spread = row[f"{first}_minus_mean"], row[f"{first}_minus_std"]
        lines.append(
            f"| {name} | {row['lr']:g} | {row['adapter_params_mean']:,.0f} | {percent(row['test_accuracy_mean'])} ± "
            f"{percent(row['test_accuracy_std'])} | {percent(diff)} ± {percent(spread)} | {row['wall_s_mean']:.0f} |"
        )
    return lines


def mean_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Each method or recipe found on every task: its mean test (and validation) accuracy over the tasks; the
    validation accuracy of the weights each run ends with (glora's fine-tuned ones where it kept them)."""
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for task, result in results.items():
        steps = result["config"]["settings"]["steps"]
        for row in result["figures"]["summary"]:
            runs = [r for r in result["figures"]["runs"] if r["method"] == row["method"]]
            validation = statistics.mean(final_validation_accuracy(r) for r in runs)
            by_name.setdefault(recipe_name(row["method"], steps), {})[task] = {**row, "validation": validation}
    tasks = list(results)
    header = " | ".join(tasks)
    lines = [
        f"| method or recipe | {header} | mean test | mean validation |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for name, rows in by_name.items():
        if len(rows) < len(tasks):
            continue
        tests = [rows[t]["test_accuracy_mean"] for t in tasks]
        validation = statistics.mean(rows[t]["validation"] for t in tasks)
        cells = " | ".join(percent(x) for x in tests)
        shown = NAMES.get(name, f"`{name}`")
        lines.append(f"| {shown} | {cells} | {percent(statistics.mean(tests))} | {percent(validation)} |")
    return lines


def margin_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The search's margin: plain glora's searched subnet against the mean of 10 random feasible subnets, both
    through the supernet's weights on the test split, seed by seed."""
    lines = [
        "| task | searched subnet (%) | random feasible subnets (%) | margin per seed (points) |",
        "|---|---|---|---|",
    ]
    for task, result in results.items():
        rows = [r for r in result["figures"]["runs"] if r["method"] == "glora"]
        searched = [r["test_accuracy_supernet"] for r in rows]
        random = [r["random_subnets_test_accuracy"] for r in rows]
        margins = " / ".join(percent(s - r) for s, r in zip(searched, random))
        lines.append(
            f"| {task} | {percent(statistics.mean(searched))} | {percent(statistics.mean(random))} | {margins} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="the <task> of results/accuracy_<task>_<device>.json")
    parser.add_argument("--device", default="gpu")
    args = parser.parse_args()
    results = {task: load(task, args.device) for task in args.tasks}
    for task, result in results.items():
        print("\n".join(task_table(task, result)) + "\n")
    print("\n".join(mean_table(results)) + "\n")
    print("\n".join(margin_table(results)))


if __name__ == "__main__":
    main()
