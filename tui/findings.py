"""The findings panel: how the shown experiment ended and what the policy saw in it, with evidence."""

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from autoresearch.runner.store import Experiment, StoredFinding
from autoresearch.tui import format as fmt

EVIDENCE_CHARS = 160


def findings_text(experiment: Experiment, findings: tuple[StoredFinding, ...]) -> Text:
    """The experiment's exit reason, then one entry per finding: severity, action, rule, message, evidence."""
    text = Text()
    text.append(f"#{experiment.id} ")
    text.append_text(fmt.status_text(experiment.status))
    if experiment.exit_reason:
        text.append(f": {experiment.exit_reason}")
    if not findings:
        text.append("\n\nNo findings.", style="dim")
    for stored in findings:
        finding = stored.finding
        text.append("\n\n")
        text.append(f"{finding.severity} ", style=fmt.SEVERITY_STYLES.get(finding.severity, ""))
        text.append(f"{finding.action} ", style="bold")
        text.append(finding.rule_id, style="cyan")
        text.append(f"\n{finding.message}")
        if finding.evidence:
            evidence = json.dumps(finding.evidence, sort_keys=True, default=str)
            text.append(f"\n{fmt.clip(evidence, EVIDENCE_CHARS)}", style="dim")
    return text


class FindingsPanel(VerticalScroll):
    """Scrollable findings of the shown experiment."""

    DEFAULT_CSS = """
    FindingsPanel { border: round $secondary; border-title-color: $text; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[Experiment, tuple[StoredFinding, ...]] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="findings-text")

    def show(self, experiment: Experiment, findings: tuple[StoredFinding, ...]) -> None:
        """Show the experiment's findings (redrawn only when they or the experiment changed)."""
        if self._shown == (experiment, findings):
            return
        if self._shown is None or self._shown[0].id != experiment.id:
            self.scroll_home(animate=False)
        self._shown = (experiment, findings)
        self.border_title = f"findings · {len(findings)}"
        self.query_one("#findings-text", Static).update(findings_text(experiment, findings))
