"""Parsing train.py's progress lines and summary block."""

from autoresearch.runner.phases.metrics import ProgressPoint, parse_progress, parse_summary


def test_progress_line_parses():
    point = parse_progress("progress step=12 elapsed=3.41 loss=5.123456 tok_per_s=12345 mfu=38.20")
    assert point == ProgressPoint(step=12, elapsed=3.41, loss=5.123456, tok_per_s=12345.0, mfu=38.2)


def test_other_and_malformed_lines_are_ignored():
    for line in ["", "step 1", "progress", "progress step=x elapsed=1 loss=2", "progress step=1 loss=2",
                 "progress step=1 elapsed=1 loss=2 junk", "\x00\xff binary"]:
        assert parse_progress(line) is None


def test_summary_reads_the_last_block():
    log = "progress step=1 elapsed=0 loss=9\n---\nval_bpb: 9\n---\nval_bpb:          0.997900\ndepth: 8\nnote: hi\n"
    assert parse_summary(log) == {"val_bpb": 0.9979, "depth": 8.0}
    assert parse_summary("no summary here") == {}
