"""Outside a workspace: the offer to create one (`autoresearch init`) in a folder the user picks, under
the doctor's checks of this machine (see checks.py)."""

from collections.abc import Sequence
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Input, Static

from autoresearch.runner.errors import UserError
from autoresearch.tui.checks import DOCTOR_ARGV, MachineChecks

DEFAULT_FOLDER = "autoresearch-workspace"
INTRO = (
    "This folder is not in an autoresearch workspace.\n\n"
    "A workspace is a git repository with the research task (prepare.py, train.py, program.md) and "
    "autoresearch.toml. Create one here and start a run on the embedded defaults: the sweep agent "
    "(no API key needed), the web corpus (the bundled offline one when its hub does not answer), and the CPU "
    "image when there is no GPU."
)


class WelcomeScreen(Screen[Path | None]):
    """Asks where to create a workspace, creates it, and dismisses with its root (None: quit)."""

    DEFAULT_CSS = """
    WelcomeScreen { align: center middle; }
    WelcomeScreen > Vertical { width: 80; max-width: 100%; height: auto; border: thick $primary; padding: 1 2; }
    WelcomeScreen #checks { margin-top: 1; }
    WelcomeScreen Input { margin-top: 1; }
    WelcomeScreen #error { color: $error; height: auto; }
    WelcomeScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    WelcomeScreen Button { margin-left: 2; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("escape", "quit", "Quit", id="welcome.quit"),
    ]

    def __init__(self, folder: Path, doctor: Sequence[str] | None = DOCTOR_ARGV) -> None:
        """folder: where to propose the workspace; doctor: the command that checks this machine, in the
        current folder (None: no checks)."""
        super().__init__()
        self.folder, self.doctor = folder, doctor

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(INTRO, markup=False)
            if self.doctor is not None:
                yield MachineChecks(None, self.doctor)
            yield Input(str(self.folder), placeholder="folder for the new workspace", id="folder")
            yield Static("", id="error")
            with Horizontal():
                yield Button("Quit (esc)", id="quit")
                yield Button("Create (enter)", id="create", variant="primary")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.query_one("#error", Static).update("creating…")
        self._init(Path(self.query_one(Input).value.strip() or DEFAULT_FOLDER))

    @work(thread=True, exclusive=True, group="init")
    def _init(self, folder: Path) -> None:
        from autoresearch.runner.init import init_workspace  # imports every agent's SDK: only when needed

        try:
            root = init_workspace(folder)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self.query_one("#error", Static).update, f"Cannot create it: {exc}")
            return
        self.app.call_from_thread(self.dismiss, root)

    @on(Button.Pressed, "#quit")
    def action_quit(self) -> None:
        self.dismiss(None)
