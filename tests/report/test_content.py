"""What the report says about a seeded run, in HTML and Markdown: figures, keeps, failures, noise, and hostile text
shown as text."""

import dataclasses
import html
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from autoresearch.runner.record import store
from autoresearch.runner.report import facts, fmt, queries
from autoresearch.runner.report.html_page import render_html
from autoresearch.runner.report.markdown_page import fenced, md, render_markdown
from autoresearch.runner.report.write import write_report
from tests.report.conftest import FAILURES_ONLY, HOSTILE, Opened, seed_report_workspace


@pytest.fixture
def pages(opened: Opened, tmp_path: Path) -> tuple[str, str]:
    write_report(opened.conn, opened.repo, opened.run, tmp_path / "report.html", "html")
    write_report(opened.conn, opened.repo, opened.run, tmp_path / "report.md", "md")
    return (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()


def text_of(page: str) -> str:
    """The HTML page's text, tags dropped and entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_headline_has_baseline_and_best_with_test_scores_and_the_runs_figures(opened: Opened):
    report = facts.gather(opened.conn, opened.repo, opened.run, queries.run_experiments(opened.conn, opened.run))
    h = report.headline
    assert (h.baseline.seq, h.baseline.val_bpb, h.baseline.test_bpb) == (1, 0.9979, 0.998112)
    assert (h.best.seq, h.best.val_bpb, h.best.test_bpb) == (13, 0.979, 0.9801)
    assert (h.experiments, h.keeps, h.seeds) == (14, 5, 0)
    assert h.spent_usd == pytest.approx(13 * 0.0481)  # one turn per proposal, #2 to #14
    assert h.device_kind == "GPU"  # the run recorded no device; its samples are NVML's
    assert h.device_hours == pytest.approx(8 * 60 / 3600)  # 8 scored experiments, 60 s of training each
    assert h.per_hour == pytest.approx(14 / (h.wall_s / 3600))


def test_both_pages_carry_the_headline(pages: tuple[str, str]):
    page, markdown = pages
    text = text_of(page)
    for figure in ("0.997900", "test_bpb 0.998112", "0.979000", "test_bpb 0.980100", "+0.018900", "$0.63",
                   "GPU-hours", "65 min", "12.9"):
        assert figure in text, figure
        assert figure in markdown, figure
    assert "Run main: val_bpb 0.997900 → 0.979000" in text and "# Run main: val_bpb 0.997900 → 0.979000" in markdown


def test_every_kept_change_in_order_with_its_gain_test_score_reasoning_and_diff(pages: tuple[str, str]):
    page, markdown = pages
    text = text_of(page)
    heads = ["#1 baseline", "#3 deeper model: DEPTH 4 -> 6", "#7 wider model: WIDTH 256 -> 384",
             "#11 cosine schedule to zero"]
    positions = [text.index(head) for head in heads]
    assert positions == sorted(positions)
    assert "gain +0.006896 · total gain +0.006896 · test_bpb 0.992230" in text
    assert "agent’s reasoning: The last results suggest trying this next: deeper model: DEPTH 4 -> 6." in text
    assert "agent’s reasoning: not recorded" in text  # the baseline was not proposed by the agent
    assert '<span class="del">-DEPTH = 4</span>\n<span class="add">+DEPTH = 6</span>' in page
    assert "<details><summary>diff against its parent</summary>" in page
    assert "-DEPTH = 4\n+DEPTH = 6" in markdown and "```diff" in markdown
    assert "train.py as its parent had it (no change)" in text  # the baseline's commit changes nothing


def test_failures_are_grouped_by_status_with_their_most_common_reasons(opened: Opened):
    report = facts.gather(opened.conn, opened.repo, opened.run, queries.run_experiments(opened.conn, opened.run))
    groups = {g.status: (g.count, g.reasons) for g in report.failures}
    assert list(groups) == ["discard", "crash", "timeout", "violation", "blocked"]
    assert groups["discard"] == (3, (("scored, did not beat the best", 3),))
    assert groups["crash"] == (1, (("train.py exited with 1", 1),))
    assert groups["violation"] == (2, (("dynamic.protected_file_changed: prepare.py changed during training", 2),))
    assert groups["blocked"] == (1, (("static.reads_validation: train.py opens the validation shard", 1),))


@pytest.mark.parametrize(("judged", "reason"), [
    ({"gain": -0.02, "best_bpb": 0.98}, "no better than the best"),
    ({"gain": 0.0002, "best_bpb": 0.98}, "better than the best by less than the keep threshold"),
    ({"gain": -0.001, "stale_parent": True, "near_miss": True}, "near miss: beat a parent that was no longer the best"),
    ({"gain": 0.0001, "seeds": [0.97, 0.99], "confirmed_by": 12}, "a close keep the second seed did not confirm"),
    ({"gain": 0.003, "unconfirmed": "the second seed ended crash"}, "a close keep whose second seed failed"),
])
def test_a_discard_is_explained_by_its_judgement_not_its_exit(opened: Opened, judged: dict, reason: str):
    """A discard's exit reason is only "finished and scored": the report says what the keep rule decided."""
    experiments = queries.run_experiments(opened.conn, opened.run)
    discard = next(e for e in experiments if e.status == "discard")
    judged_discard = dataclasses.replace(discard, judge_json=judged, exit_reason="finished and scored")
    report = facts.gather(opened.conn, opened.repo, opened.run,
                          [judged_discard if e.id == discard.id else e for e in experiments])
    [discards] = [g for g in report.failures if g.status == "discard"]
    assert (reason, 1) in discards.reasons


def test_violations_and_blocked_proposals_come_with_their_evidence(pages: tuple[str, str]):
    page, markdown = pages
    text = text_of(page)
    assert "Rule breaks (3)" in text
    assert "#9 violation : overwrite prepare.py's evaluation" in text
    assert '{"after": "cd34", "before": "ab12", "file": "prepare.py"}' in text
    assert '{"line": 12, "path": "/data/val.bin"}' in text
    assert '{"after": "cd34", "before": "ab12", "file": "prepare.py"}' in markdown


def test_the_noise_and_the_keeps_within_it(pages: tuple[str, str]):
    page, markdown = pages
    text = text_of(page)
    assert "Standard deviation 0.003000 bpb (mean 0.997900) over 3 runs, measured by this run." in text
    verdict = ("3 of 4 kept changes gained less than 2 standard deviations (0.006000), within the noise: "
               "#7 (+0.005572), #11 (+0.004198), #13 (+0.002234).")
    assert verdict in text and verdict in markdown
    assert text.count("within the noise") == 4  # three badges and the verdict
    assert markdown.count("*within the noise*") == 3


def test_utilisation_per_hour_and_where_the_time_went(pages: tuple[str, str]):
    page, markdown = pages
    text = text_of(page)
    assert "GPU utilisation over the run" in text and "| 1 | GPU | 78% | 475 | 1 |" in markdown
    assert "training 8 min 12.3%" in text
    assert "idle or between experiments (what is left of the wall time) 55 min" in text


def test_hostile_text_stays_text_in_html(pages: tuple[str, str]):
    page, _ = pages
    assert "<script" not in page.lower() and "href=" not in page and "evil.example/p.png\"" not in page
    assert page.count("<img") == 1 and 'src="data:image/png;base64,' in page  # only the chart, inline
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\\x1b[31mred" in page
    assert 'content="default-src \'none\'; img-src data:; style-src \'unsafe-inline\'"' in page


def test_hostile_text_stays_text_in_markdown(pages: tuple[str, str]):
    _, markdown = pages
    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<script" not in rendered and "<a " not in rendered and "<strong>bold" not in rendered
    assert re.findall(r'<img src="([^"]*)"', rendered) == ["progress.png"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; [click](http://evil.example/x)" in rendered
    assert "<code>code</code>" not in rendered and "\x1b" not in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| violation |")]
    assert len(rows) == 1 and rows[0].count(" | ") == 2  # a | in a description cannot add a table cell


def test_markdown_escaping_and_fences():
    assert md("a [b](c) *d* <e> | f") == r"a \[b\]\(c\) \*d\* \<e\> \| f"
    assert fenced("x ``` y `````", "diff").startswith("``````diff\n")


def test_a_run_with_only_failures_and_nothing_measured_says_not_recorded(tmp_path: Path):
    seeded = seed_report_workspace(tmp_path / "ws", plan=FAILURES_ONLY, noise=False)
    conn = store.open_store(seeded.ws.store_path, readonly=True)
    try:
        run = store.get_run(conn, seeded.run_id)
        experiments = queries.run_experiments(conn, run)
        report = facts.gather(conn, None, run, experiments)
    finally:
        conn.close()
    assert report.keeps == () and report.headline.best is None and report.noise is None and report.time is None
    text = text_of(render_html(report, b"png"))
    assert "baseline val_bpb not recorded test_bpb not recorded" in text
    assert "No experiment was kept." in text and "Noise: not recorded." in text and "Timings: not recorded." in text
    markdown = render_markdown(report, "progress.png")
    assert "| baseline val_bpb | not recorded (test_bpb not recorded) |" in markdown


def test_a_keep_whose_commit_git_lacks_has_no_diff_but_a_report(opened: Opened):
    report = facts.gather(opened.conn, None, opened.run, queries.run_experiments(opened.conn, opened.run))
    assert all(k.diff is None for k in report.keeps)
    assert "diff against its parent: not recorded" in text_of(render_html(report, b"png"))


@pytest.mark.parametrize(("response", "text"), [
    ({"content": [{"type": "text", "text": "\n  Try a deeper model.\nThen wider."},
                  {"type": "tool_use", "name": "submit", "input": {}}]}, "Try a deeper model."),
    ({"choices": [{"message": {"role": "assistant", "content": "Lower the LR."}}]}, "Lower the LR."),
    ({"output": [{"type": "message", "content": [{"type": "output_text", "text": "Add warmup."}]}]}, "Add warmup."),
    ({"status": 200, "input_tokens": 10}, ""),
    (["not", "a", "reply"], ""),
])
def test_the_agents_words_are_read_from_each_reply_shape(response: object, text: str):
    assert queries.first_line(queries.reply_text(response)) == text


def test_hostile_text_in_the_agents_words_is_data(opened: Opened):
    kept = [e for e in store.list_experiments(opened.conn, opened.run.id) if e.description == HOSTILE.replace(
        "\x1b", "\\x1b")]
    words = queries.reasoning(opened.conn, [kept[0].id])
    assert "\x1b" not in words[kept[0].id] and "\\x1b[31mred" in words[kept[0].id]


def test_the_noise_verdict_with_no_kept_change_claims_nothing(opened: Opened):
    """Found in a trial: with the baseline the only keep, the page said every kept change beat the noise."""
    report = facts.gather(opened.conn, opened.repo, opened.run, queries.run_experiments(opened.conn, opened.run))
    assert report.noise is not None
    bound = "2 standard deviations (0.006000)"
    assert fmt.noise_verdict(report.noise, report.keeps[:1]) == f"No kept change yet to weigh against {bound}."
    one = dataclasses.replace(report.keeps[1], within_noise=False)
    assert fmt.noise_verdict(report.noise, (report.keeps[0], one)) == f"The kept change gained more than {bound}."
