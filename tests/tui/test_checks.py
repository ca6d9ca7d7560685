"""The doctor's checks in the TUI: its JSON report parsed and drawn, the subprocess bounded, and the welcome
screen and the offer to start a run showing them (with a stand-in doctor, and once with the real one)."""

import json
import os
import sys
import time

import pytest
from rich.console import Console

from autoresearch.runner import control
from autoresearch.runner.workspace import Workspace
from autoresearch.tui.checks import (
    DOCTOR_ARGV,
    NAME_WIDTH,
    RUNNING,
    Check,
    MachineChecks,
    Unavailable,
    headline,
    parse_doctor_json,
    render,
    run_doctor,
)
from autoresearch.tui.start import StartRunScreen
from autoresearch.tui.welcome import WelcomeScreen
from tests.tui.conftest import fake_doctor, make_app, wait_for

REPORT = {"ok": False, "checks": [
    {"name": "sandbox", "status": "fail", "detail": "cannot reach the Docker engine [Errno 2]",
     "fix": "start Docker: sudo systemctl start docker"},
    {"name": "gpus", "status": "skip", "detail": "no GPU: experiments run on the CPU image", "fix": None},
    {"name": "web corpus", "status": "warn", "detail": "the hub does not answer", "fix": "open the network"},
    {"name": "agent", "status": "ok", "detail": "sweep (offline, no key needed)", "fix": None},
]}
HOSTILE = "\x1b[2J\x1b]0;pwned\x07 [@click=app.quit]quit[/] [red]x[/red]"


def plain(renderable, width: int = 100) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115 (closed with the console)
    console.print(renderable)
    return console.export_text()


def text_of(widget) -> str:
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


# --- the report --------------------------------------------------------------------------------------


def test_a_report_parses_into_one_check_per_entry():
    checks = parse_doctor_json(json.dumps(REPORT))
    assert checks == [
        Check("sandbox", "fail", "cannot reach the Docker engine [Errno 2]",
              "start Docker: sudo systemctl start docker"),
        Check("gpus", "skip", "no GPU: experiments run on the CPU image", None),
        Check("web corpus", "warn", "the hub does not answer", "open the network"),
        Check("agent", "ok", "sweep (offline, no key needed)", None),
    ]


def test_chatter_before_the_report_is_tolerated():
    assert parse_doctor_json("a warning from some library\n" + json.dumps(REPORT)) == parse_doctor_json(
        json.dumps(REPORT))


@pytest.mark.parametrize(("text", "reason"), [
    ("", "printed no report"),
    ("Traceback (most recent call last): boom", "not JSON: Traceback"),
    ("[1, 2]", "no list of checks"),
    ('{"ok": true}', "no list of checks"),
    ('{"ok": true, "checks": [{"status": "ok"}]}', "check 1 of the doctor's report has no name"),
    ('{"ok": true, "checks": ["sandbox"]}', "check 1"),
    ('{"ok": true, "checks": []}', "no checks"),
])
def test_anything_but_a_report_is_a_reason_not_a_crash(text, reason):
    result = parse_doctor_json(text)
    assert isinstance(result, Unavailable) and reason in result.reason


def test_a_hostile_detail_is_escaped_and_drawn_literally():
    report = {"ok": True, "checks": [{"name": "image", "status": "ok", "detail": HOSTILE, "fix": HOSTILE}]}
    result = parse_doctor_json(json.dumps(report))
    shown = plain(render(result))
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "[@click=app.quit]quit[/]" in shown and "[red]x[/red]" in shown


# --- drawing it --------------------------------------------------------------------------------------


def test_each_check_is_a_line_with_its_mark_and_a_fix_line_when_it_has_one():
    shown = plain(render(parse_doctor_json(json.dumps(REPORT)))).splitlines()
    assert shown[0].strip() == "1 problem: the run cannot start until they are fixed"
    assert shown[1].split() == ["✗", "sandbox", "cannot", "reach", "the", "Docker", "engine", "[Errno", "2]"]
    assert shown[2].split() == ["fix:", "start", "Docker:", "sudo", "systemctl", "start", "docker"]
    assert shown[3].startswith("– gpus") and shown[4].startswith("! web corpus")
    assert shown[5].strip() == "fix: open the network" and shown[6].startswith("✓ agent")
    assert shown[1].index("cannot") == shown[2].index("fix:") == shown[6].index("sweep")  # one column


def test_the_marks_are_coloured_and_the_fixes_dim():
    table = render(parse_doctor_json(json.dumps(REPORT))).renderables[1]
    marks, _names, details = (list(column.cells) for column in table.columns)
    assert [(cell.plain, str(cell.style)) for cell in marks if cell] == [
        ("✗", "red"), ("–", "dim"), ("!", "yellow"), ("✓", "green")]
    assert str(details[1].style) == "dim" and details[1].plain.startswith("fix: ")


@pytest.mark.parametrize(("statuses", "headline"), [
    (["ok", "skip"], "ready to run"),
    (["ok", "warn", "warn"], "ready to run (2 warnings)"),
    (["fail", "warn", "fail"], "2 problems: the run cannot start until they are fixed"),
])
def test_the_headline_counts_the_problems(statuses, headline):
    checks = [Check(f"check {i}", status, "detail") for i, status in enumerate(statuses)]
    assert plain(render(checks)).splitlines()[0].rstrip() == headline


def test_while_running_and_when_unavailable_it_is_one_line():
    assert plain(render(None)).strip() == RUNNING == "checking this machine…"
    assert plain(render(Unavailable("the doctor timed out"))).strip() == "checks unavailable: the doctor timed out"


def test_an_unknown_status_shows_with_a_question_mark():
    assert plain(render([Check("new", "maybe", "a newer doctor")])).splitlines()[1].split()[:2] == ["?", "new"]


# --- running the doctor ------------------------------------------------------------------------------


def test_the_doctor_runs_in_the_folder_and_a_failed_check_still_carries_its_report(tmp_path):
    report = {"ok": False, "checks": [{"name": "here", "status": "fail", "detail": "{cwd}", "fix": None}]}
    assert run_doctor(tmp_path, fake_doctor(report, code=1)) == [Check("here", "fail", str(tmp_path))]


@pytest.mark.parametrize(("argv", "reason"), [
    (fake_doctor("", code=2, stderr="autoresearch: not a workspace setting: foo\n"),
     "autoresearch: not a workspace setting: foo"),
    (fake_doctor("", code=1, stderr="Traceback (most recent call last):\n  ...\nKeyError: 'x'\n"), "KeyError: 'x'"),
    (fake_doctor("usage: autoresearch ...", code=0), "not JSON: usage"),
    (fake_doctor("usage: autoresearch ...", code=2), "exited with status 2"),
    (fake_doctor("", code=3), "exited with status 3"),
    ([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], "exited with status -9"),
    (["/nonexistent/autoresearch-doctor"], "cannot run the doctor"),
])
def test_a_doctor_that_fails_to_report_gives_a_reason(tmp_path, argv, reason):
    result = run_doctor(tmp_path, argv)
    assert isinstance(result, Unavailable) and reason in result.reason, result


def hanging_doctor(pid_file) -> list[str]:
    """A doctor that writes its pid, then hangs."""
    return [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                  "time.sleep(60)"]


def gone(pid_file) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return True
    return False


def test_a_doctor_past_its_time_is_killed(tmp_path):
    started = time.monotonic()
    result = run_doctor(tmp_path, hanging_doctor(tmp_path / "pid"), timeout_s=1.0)
    assert result == Unavailable("the doctor did not finish within 1 s")
    assert time.monotonic() - started < 10 and gone(tmp_path / "pid")


def test_a_cancelled_doctor_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    assert run_doctor(tmp_path, hanging_doctor(pid_file), cancelled=pid_file.exists) is None
    assert gone(pid_file)


# --- on screen ---------------------------------------------------------------------------------------

on_screen = pytest.mark.anyio  # the Pilot tests run on asyncio (see conftest.anyio_backend)


def outside_a_workspace(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path / "cache" / "scratch", tmp_path, True)


@on_screen
async def test_the_welcome_screen_shows_the_checks_without_waiting_for_them(tmp_path, monkeypatch):
    go = tmp_path / "go"
    app = make_app(outside_a_workspace(tmp_path, monkeypatch), new_folder=tmp_path / "new-ws",
                   doctor=fake_doctor(REPORT, code=1, wait_for_file=go))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the welcome screen")
        checks = app.screen.query_one(MachineChecks)
        await pilot.pause()
        assert RUNNING in text_of(checks.query_one("Static"))
        await pilot.press("end", "-", "2")  # the screen answers while the doctor runs
        assert app.screen.query_one("#folder").value == f"{tmp_path / 'new-ws'}-2"
        go.touch()
        await wait_for(pilot, lambda: checks.result is not None, what="the doctor's report")
        await pilot.pause()
        shown = text_of(checks.query_one("Static"))
        assert "1 problem: the run cannot start until they are fixed" in shown
        assert "✗ sandbox" in shown and "fix: start Docker: sudo systemctl start docker" in shown
        assert "cannot reach the Docker engine [Errno 2]" in shown  # brackets drawn, not taken for markup
        assert "✓ agent" in shown and "– gpus" in shown and "! web corpus" in shown


@on_screen
async def test_a_doctor_that_prints_garbage_is_one_line_on_the_welcome_screen(tmp_path, monkeypatch):
    app = make_app(outside_a_workspace(tmp_path, monkeypatch), doctor=fake_doctor("Segmentation fault", code=1))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the welcome screen")
        checks = app.screen.query_one(MachineChecks)
        await wait_for(pilot, lambda: checks.result is not None, what="the doctor's report")
        await pilot.pause()
        assert text_of(checks.query_one("Static")).strip() == (
            "checks unavailable: the doctor's output is not JSON: Segmentation fault")
        assert isinstance(app.screen, WelcomeScreen)


@on_screen
async def test_at_80x24_the_checks_scroll_and_the_buttons_stay_on_screen(tmp_path, monkeypatch):
    many = {"ok": True, "checks": [{"name": f"check {i}", "status": "ok", "detail": "fine", "fix": None}
                                   for i in range(30)]}
    app = make_app(outside_a_workspace(tmp_path, monkeypatch), doctor=fake_doctor(many))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the welcome screen")
        checks = app.screen.query_one(MachineChecks)
        await wait_for(pilot, lambda: checks.result is not None, what="the doctor's report")
        await pilot.pause()
        assert app.screen.query_one("#create").region.bottom <= 23
        assert checks.max_scroll_y > 0 and checks.region.height >= MachineChecks.MIN_ROWS


@on_screen
async def test_quitting_while_the_doctor_runs_ends_it(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    app = make_app(outside_a_workspace(tmp_path, monkeypatch), doctor=hanging_doctor(pid_file))
    started = time.monotonic()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, pid_file.exists, what="the doctor to start")
        await pilot.press("escape")
    deadline = time.monotonic() + 5
    while not gone(pid_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid_file) and time.monotonic() - started < 20


@on_screen
async def test_the_offer_to_start_a_run_shows_the_checks_of_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "detach", lambda ws, argv: (4321, ws.root / "log"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "autoresearch.toml").write_text("")
    report = {"ok": True, "checks": [{"name": "workspace", "status": "ok", "detail": "{cwd}", "fix": None}]}
    app = make_app(Workspace(root, root, False), doctor=fake_doctor(report))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, StartRunScreen), what="the offer")
        checks = app.screen.query_one(MachineChecks)
        await wait_for(pilot, lambda: checks.result is not None, what="the doctor's report")
        await pilot.pause()
        shown = text_of(checks.query_one("Static"))
        assert checks.result == [Check("workspace", "ok", str(root))]  # the doctor ran in the workspace
        assert shown.startswith("ready to run") and "✓ workspace" in shown


@on_screen
async def test_without_a_doctor_the_screens_show_no_checks(tmp_path, monkeypatch):
    app = make_app(outside_a_workspace(tmp_path, monkeypatch))  # the tests' default: doctor=None
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the welcome screen")
        assert not app.screen.query(MachineChecks)


@on_screen
async def test_the_welcome_screen_runs_the_real_doctor(tmp_path, monkeypatch):
    """`autoresearch doctor --json` for real, in a folder outside a workspace: what it finds depends on
    the machine, but it reports, and every check it reports is on screen."""
    app = make_app(outside_a_workspace(tmp_path, monkeypatch), doctor=DOCTOR_ARGV)
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, WelcomeScreen), what="the welcome screen")
        checks = app.screen.query_one(MachineChecks)
        await wait_for(pilot, lambda: checks.result is not None, timeout=90, what="the doctor's report")
        await pilot.pause()
        assert isinstance(checks.result, list), checks.result
        shown = text_of(checks.query_one("Static"))
        assert shown.splitlines()[0].strip() == headline(checks.result).plain
        for check in checks.result:
            assert f" {check.name[:NAME_WIDTH - 1]}" in shown, check
