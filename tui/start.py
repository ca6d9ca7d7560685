"""The offer to start a run: `autoresearch run --tag TAG --detach`, with the tag to use, under the doctor's
checks of the machine and the workspace's configuration (see checks.py)."""

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from autoresearch.runner.errors import UserError
from autoresearch.runner.record import gitrepo
from autoresearch.runner.workspace import Workspace
from autoresearch.tui.checks import DOCTOR_ARGV, MachineChecks

DEFAULT_TAG = "main"


def start_question(ws: Workspace, resumes: bool) -> str:
    again = "The tag of an existing run resumes it where it stopped; a new tag starts a new run. " if resumes else ""
    return (f"Start the research loop in {ws.root}?\n\nIt runs as `autoresearch run --tag TAG --detach`, in the "
            f"background: quitting this view never stops it. {again}It follows the workspace's autoresearch.toml "
            "(by default the sweep agent, which needs no API key, and the CPU image when there is no GPU).")


class StartRunScreen(ModalScreen[str | None]):
    """Asks for the run's tag; dismisses with it, or with None (cancel, escape)."""

    DEFAULT_CSS = """
    StartRunScreen { align: center middle; }
    StartRunScreen > Vertical {
        width: 76; max-width: 100%; height: auto; border: thick $primary; background: $surface; padding: 1 2;
    }
    StartRunScreen #checks { margin-top: 1; }
    StartRunScreen Input { margin: 1 0 0 0; }
    StartRunScreen #error { color: $error; height: auto; }
    StartRunScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    StartRunScreen Button { margin-left: 2; }
    """
    BINDINGS: list[BindingType] = [  # noqa: RUF012 (Textual's own declaration style)
        Binding("escape", "cancel", "Cancel", id="start.cancel"),
    ]

    def __init__(self, ws: Workspace, tag: str = DEFAULT_TAG, resumes: bool = False,
                 doctor: Sequence[str] | None = DOCTOR_ARGV) -> None:
        """doctor: the command that checks the machine and the workspace's configuration (None: no checks)."""
        super().__init__()
        self.ws, self.tag, self.resumes, self.doctor = ws, tag, resumes, doctor

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(start_question(self.ws, self.resumes), markup=False)
            if self.doctor is not None:
                yield MachineChecks(self.ws.root, self.doctor)
            yield Input(self.tag, placeholder="run tag", id="tag")
            yield Static("", id="error")
            with Horizontal():
                yield Button("Not now (esc)", id="cancel")
                yield Button("Start (enter)", id="start", variant="primary")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        tag = self.query_one(Input).value.strip()
        try:
            gitrepo.branch_name(tag)
        except UserError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss(tag)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
