"""The benchmark harness measures what it says; the report renders what it is given."""

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import build_times, harness, report


def test_fit_exponent_recovers_known_powers():
    sizes = [64, 128, 256, 512]
    assert harness.fit_exponent(sizes, [3.0 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert harness.fit_exponent(sizes, [0.5 * n for n in sizes]) == pytest.approx(1.0)


def test_compare_reports_a_slower_recipe_as_a_ratio_above_one():
    x = jnp.ones((256, 256))
    result = harness.compare(lambda x: (x @ x) @ x, lambda x: x + 1.0, (x,), repeats=3)
    assert result["ratio"] > 1.0
    assert result["recipe"]["median_s"] > 0 and result["twin"]["median_s"] > 0
    low, high = result["ratio_iqr"]  # the spread of the per-repeat ratios brackets their median
    assert 0 < low <= result["ratio"] <= high


def test_compiled_stats_counts_matmul_flops():
    a = jnp.ones((32, 48))
    b = jnp.ones((48, 16))
    stats = harness.compiled_stats(lambda a, b: a @ b, (a, b))
    assert stats["flops"] == pytest.approx(2 * 32 * 48 * 16, rel=0.05)


def test_report_renders_every_part():
    row = {"median_s": 2e-6, "iqr_s": 1e-7, "samples": 3}
    results = {
        "date": "2026-11-23T00:00:00+00:00",
        "machine": {"cpu": "cpu", "cores": 2, "platform": "linux", "python": "3.11", "jax": "0.10.2", "backend": "cpu"},
        "peak_matmul": {"n": 8, "flops_per_s": 1e10},
        "comparisons": [{"name": "gelu", "size": "N = 3", "recipe": row, "twin": row, "twin_name": "jax.nn.gelu", "ratio": 1.0,
                         "ratio_iqr": [0.9, 1.25]}],
        "summary": {"median_ratio": 1.0, "geometric_mean_ratio": 1.0,
                    "worst": {"name": "gelu", "size": "N = 3", "ratio": 1.0}},
        "growth": [{"study": "attention", "variant": "direct", "sizes": [1, 2], "size_name": "S",
                    "time_exponent": 2.0, "memory_exponent": None}],
        "utilisation": [{"name": "mlp", "description": "d", "flops_per_step": 1e6, "step_s": 1e-3,
                         "flops_per_s": 1e9, "mfu": 0.1}],
        "build": {"html_cold_s": 100.0, "html_incremental_s": 10.0},
    }
    text = report.render(results)
    for fragment in ("10.0 GFLOP/s", "``jax.nn.gelu``", "Median ratio over all rows: **1.00**", "1.00 [0.90, 1.25]", "10.0 %", "100 s"):
        assert fragment in text
    assert report.render({}).startswith("No results yet")


def test_the_new_chapters_rows_compare_equal_computations():
    # A row times a recipe against its library twin: both must first return the same values.
    import jax

    from benchmarks import cases_chapters_2, cases_chapters_3

    rows = cases_chapters_2.comparisons() + cases_chapters_3.comparisons()
    assert len(rows) == 10
    for case in rows:
        inputs = case.make(case.sizes[0])
        mine, twin = jax.jit(case.recipe)(*inputs), jax.jit(case.twin)(*inputs)
        assert np.shape(mine) == np.shape(twin), case.name
        np.testing.assert_allclose(mine, twin, rtol=1e-5, atol=1e-5, err_msg=case.name)


def test_report_gives_the_conditions_of_each_history_point():
    history = [{"date": "2026-11-24", "recipes": 57, "make_test_s": 490.1},
               {"date": "2026-12-02", "recipes": 128, "make_test_s": 3574.4, "conditions": "machine loaded"}]
    machine = {"cpu": "cpu", "cores": 2, "platform": "linux", "python": "3.11", "jax": "0.10.2", "backend": "cpu"}
    text = report.render({"date": "2026-12-02T00:00:00+00:00", "machine": machine, "peak_matmul": {"n": 8, "flops_per_s": 1e10},
                          "comparisons": [], "summary": {}, "growth": [], "utilisation": [],
                          "build": {"html_cold_s": 1.0, "html_incremental_s": 1.0}, "history": history})
    first, second = text.index("   * - 2026-11-24"), text.index("   * - 2026-12-02")
    assert first < text.index("490 s") < text.index("machine idle") < second  # each row carries its conditions
    assert second < text.index("3574 s") < text.index("machine loaded")


def test_only_the_points_flagged_loaded_are_drawn_as_measured_on_a_shared_machine():
    # The performance page draws a history point hollow when its record says "loaded": true; a
    # conditions text alone (a CI run, an idle machine) is not a reason to.
    import json

    history = json.loads(build_times.RESULTS.read_text())["history"]
    assert all(set(h) <= {"date", "recipes", "make_test_s", "conditions", "compile_probe_ms", "loaded"} for h in history)
    assert all(h.get("loaded", True) is True for h in history)  # absent, or the boolean true
    loaded = [h for h in history if h.get("loaded")]
    assert loaded and all("helper sessions" in h["conditions"] for h in loaded)
    assert not any(h.get("loaded") for h in history if "machine idle" in h.get("conditions", "machine idle"))


def test_report_gives_the_compile_probe_of_each_history_point():
    history = [{"date": "2026-11-24", "recipes": 57, "make_test_s": 490.1},
               {"date": "2026-12-03", "recipes": 171, "make_test_s": 1100.0, "compile_probe_ms": [57.3, 61.6]}]
    machine = {"cpu": "cpu", "cores": 2, "platform": "linux", "python": "3.11", "jax": "0.10.2", "backend": "cpu"}
    text = report.render({"date": "2026-12-03T00:00:00+00:00", "machine": machine, "peak_matmul": {"n": 8, "flops_per_s": 1e10},
                          "comparisons": [], "summary": {}, "growth": [], "utilisation": [],
                          "build": {"html_cold_s": 1.0, "html_incremental_s": 1.0, "make_test_s": 1100.0,
                                    "compile_probe_ms": [57.3, 61.6]}, "history": history})
    assert "cold (fresh clone, empty compilation cache; installing not counted; compile probe 57 ms before" in text
    first, second = text.index("   * - 2026-11-24"), text.index("   * - 2026-12-03")
    assert "Compile probe" in text
    assert first < text.index("not taken") < second < text.rindex("57 ms before, 62 ms after")


def test_the_compile_probe_uses_the_suites_flags_and_measures_a_compile(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text("PYTHON ?= python3\nexport XLA_FLAGS ?= --xla_a=1 --xla_b=2\nexport OTHER := 1\n")
    assert build_times.suite_xla_flags(makefile) == "--xla_a=1 --xla_b=2"
    makefile.write_text("export JAX_PLATFORMS := cpu\n")
    with pytest.raises(ValueError, match="sets no XLA_FLAGS"):
        build_times.suite_xla_flags(makefile)
    assert build_times.suite_xla_flags().startswith("--xla_")  # the real Makefile's
    assert 0.1 < build_times.compile_probe_ms(programs=3) < 10_000  # a compile takes milliseconds, not none


def test_the_recipe_count_of_a_measurement_is_the_catalogues():
    from cookbook import _book

    assert build_times._recipe_count(build_times.ROOT) == len(_book.all_recipes())
