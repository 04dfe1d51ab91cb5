"""Render ``benchmarks/results.json`` as reStructuredText for the book's performance page.

Pure Python with no JAX, so that ``conf.py`` can call it while the build starts.
"""

from __future__ import annotations

import json
from pathlib import Path


def _us(seconds):
    return f"{seconds * 1e6:,.1f}"


def _ratio(row):
    if "ratio_iqr" not in row:
        return f"{row['ratio']:.2f}"
    low, high = row["ratio_iqr"]
    return f"{row['ratio']:.2f} [{low:.2f}, {high:.2f}]"


def _table(header, rows, widths=None):
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(map(str, widths)))
    lines.append("")
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return lines + [""]


def render(results: dict) -> str:
    if not results:
        return "No results yet: run ``make bench``.\n"
    m = results["machine"]
    peak = results["peak_matmul"]
    out = [
        f"Measured on {results['date'][:10]}: {m['cpu']}, {m['cores']} cores, {m['platform']}; "
        f"Python {m['python']}, JAX {m['jax']} on the ``{m['backend']}`` backend. "
        f"The measured float32 matrix-product peak of that machine is "
        f"**{peak['flops_per_s'] / 1e9:.1f} GFLOP/s** ({peak['n']} x {peak['n']} operands)."
        + (" *This was a quick smoke run: few sizes and repeats.*" if results.get("quick") else ""),
        "",
    ]
    s = results["summary"]
    if results["comparisons"]:
        worst = s["worst"]
        out += [
            "Recipe against library twin",
            "---------------------------",
            "",
            "Median time of one jitted call, after compilation, recipe and twin timed interleaved; the "
            "spread is the inter-quartile range. The ratio is the median of the ratios of the "
            "recipe's and the twin's samples of each repeat, taken back to back, with the "
            "inter-quartile range of those ratios in brackets. A ratio above 1 means the recipe is "
            "slower; where the bracket holds 1, the two cannot be told apart on this machine.",
            "",
            f"Median ratio over all rows: **{s['median_ratio']:.2f}**; geometric mean "
            f"{s['geometric_mean_ratio']:.2f}; worst: {worst['name']} at {worst['size']}, "
            f"{worst['ratio']:.2f}.",
            "",
        ]
        rows = [
            [f"``{r['name']}``", r["size"], f"{_us(r['recipe']['median_s'])} ± {_us(r['recipe']['iqr_s'])}",
             f"{_us(r['twin']['median_s'])} ± {_us(r['twin']['iqr_s'])}", f"``{r['twin_name']}``", _ratio(r)]
            for r in results["comparisons"]
        ]
        out += _table(["Recipe", "Size", "Recipe (µs)", "Twin (µs)", "Twin", "Ratio"], rows)
    if results["growth"]:
        out += [
            "Growth with size",
            "----------------",
            "",
            "The exponent *p* of the fit time ∝ size\\ :sup:`p` (and the same for the temporary memory "
            "that XLA allocates for the compiled function) on a log-log scale.",
            "",
        ]
        rows = [
            [r["study"], r["variant"], f"{r['size_name']} = {', '.join(map(str, r['sizes']))}",
             f"{r['time_exponent']:.2f}", "n/a" if r["memory_exponent"] is None else f"{r['memory_exponent']:.2f}"]
            for r in results["growth"]
        ]
        out += _table(["Study", "Variant", "Sizes", "Time exponent", "Memory exponent"], rows)
    if results["utilisation"]:
        out += [
            "Training steps against the machine",
            "----------------------------------",
            "",
            "FLOPs per step as counted by XLA for the compiled step; utilisation is the achieved "
            "FLOP/s divided by the measured matrix-product peak above.",
            "",
        ]
        rows = [
            [r["name"], r["description"], f"{r['flops_per_step'] / 1e6:,.2f}", f"{r['step_s'] * 1e3:,.3f}",
             f"{r['flops_per_s'] / 1e9:,.2f}", f"{r['mfu'] * 100:.1f} %"]
            for r in results["utilisation"]
        ]
        out += _table(["Step", "What", "MFLOP/step", "ms/step", "GFLOP/s", "Utilisation"], rows)
    b = results.get("build", {})
    if b:
        out += ["Building and testing the book", "-----------------------------", ""]
        rows = [["``make html``, cold (from a fresh clone)", f"{b['html_cold_s']:.0f} s"],
                ["``make html``, one recipe touched", f"{b['html_incremental_s']:.0f} s"]]
        if "make_test_s" in b:
            recipes = f", {b['recipes']} recipes" if "recipes" in b else ""
            probe = f"; compile probe {_probe(b)}" if "compile_probe_ms" in b else ""
            rows.append([f"``make test``, cold (fresh clone, empty compilation cache{recipes}; installing not counted{probe})",
                         f"{b['make_test_s']:.0f} s"])
        if "make_test_one_changed_s" in b:
            rows.append(["``make test``, one recipe touched, compilation cache warm", f"{b['make_test_one_changed_s']:.0f} s"])
        if "make_check_s" in b:
            rows.append(["``make check RECIPE=attention/rope``, the recipe touched, cache warm", f"{b['make_check_s']:.0f} s"])
        out += _table(["What", "Wall time"], rows)
    history = results.get("history", [])
    if history:
        out += ["The cold ``make test`` as the book grew (the figure above draws it):", ""]
        out += _table(["Date", "Recipes", "Cold ``make test``", "Compile probe", "Conditions"],
                      [[h["date"], str(h["recipes"]), f"{h['make_test_s']:.0f} s", _probe(h),
                        h.get("conditions", "machine idle")] for h in history])
    return "\n".join(out) + "\n"


def _probe(point: dict) -> str:
    """The compile probe of a measured cold ``make test`` (a history point, or the latest run), taken
    before and after the run (``benchmarks.build_times``)."""
    if "compile_probe_ms" not in point:
        return "not taken"
    before, after = point["compile_probe_ms"]
    return f"{before:.0f} ms before, {after:.0f} ms after"


def write(results_path: Path, out_path: Path) -> None:
    results = json.loads(Path(results_path).read_text()) if Path(results_path).exists() else {}
    text = render(results)
    out_path = Path(out_path)
    if not out_path.exists() or out_path.read_text() != text:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
