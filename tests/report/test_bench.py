"""`autoresearch bench --report N` on a small run: it records the run, times the three outputs and says how big."""

import json

from autoresearch.runner.bench.report_bench import run_report_bench


def test_the_report_bench_times_html_markdown_and_the_chart(capsys):
    result = run_report_bench(60, as_json=True)
    assert json.loads(capsys.readouterr().out) == result
    assert result["experiments"] == 60 and result["kept"] >= 2
    assert all(result[f"{name}_s"] > 0 for name in ("html", "md", "png"))
    assert set(result["md_bytes"]) == {"report.md", "progress.png"} and result["png_bytes"]["alone.png"] > 10_000
