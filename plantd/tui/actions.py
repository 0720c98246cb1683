"""Every key and action of the console, declared once.

Bindings, the help screen and the command palette are all generated from this table, so a key
cannot exist without being documented, and read-only mode disables exactly the `write` actions.
Keys are chosen to survive SSH: letters, digits, F-keys and ctrl+letter; never ctrl+enter-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

VIEWS = {"app": "Global", "overview": "Overview", "state": "State", "logs": "Logs", "call": "Call"}


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action: where it applies, its keys (comma separated), and whether it writes."""

    view: str
    keys: str
    action: str
    description: str
    write: bool = False
    show: bool = True  # shown in the footer (every action is in help and the palette)
    label: str = ""  # short footer text (80 columns are shared by every key shown)

    @property
    def footer(self) -> str:
        return self.label or self.description

    @property
    def key_display(self) -> str:
        return " / ".join(_pretty(k) for k in self.keys.split(","))


def _pretty(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "escape": "Esc", "enter": "Enter"}
    if key in names:
        return names[key]
    if key.startswith("f") and key[1:].isdigit():
        return key.upper()
    return key.replace("ctrl+", "^")


ACTIONS: tuple[ActionSpec, ...] = (
    # global
    ActionSpec("app", "f1,question_mark", "help", "Help: every key", label="Help"),
    ActionSpec("app", "f2,1", "show_tab('overview')", "Overview tab"),
    ActionSpec("app", "f3,2", "show_tab('state')", "State tab"),
    ActionSpec("app", "f4,3", "show_tab('logs')", "Logs tab"),
    ActionSpec("app", "f5,4", "show_tab('call')", "Call tab"),
    ActionSpec("app", "ctrl+p", "command_palette", "Command palette", show=False),
    ActionSpec("app", "q", "quit", "Quit"),
    # overview
    ActionSpec("overview", "c", "call_service", "Call the selected service", label="Call"),
    ActionSpec("overview", "r", "refresh", "Refresh now", label="Refresh"),
    ActionSpec(
        "overview",
        "g",
        "toggle_grouping",
        "Group healthy workers / list each",
        show=False,
    ),
    # state
    ActionSpec("state", "slash", "filter", "Filter keys", label="Filter"),
    ActionSpec("state", "e", "edit", "Edit value", write=True, label="Edit"),
    ActionSpec("state", "n", "new_key", "Set a new key", write=True, label="New"),
    ActionSpec("state", "d", "delete_key", "Delete key", write=True, label="Delete"),
    ActionSpec("state", "a", "create_scope", "Create scope", write=True, show=False),
    ActionSpec("state", "x", "delete_scope", "Delete scope", write=True, show=False),
    ActionSpec("state", "y", "copy_value", "Copy value (OSC 52)", label="Copy"),
    ActionSpec("state", "r", "reload", "Reload", show=False),
    ActionSpec("state", "escape", "clear_filter", "Clear filter", show=False),
    # logs
    ActionSpec("logs", "slash", "search", "Search text", label="Search"),
    ActionSpec("logs", "l", "cycle_level", "Minimum level", label="Level"),
    ActionSpec("logs", "s", "pick_service", "Service filter", label="Service"),
    ActionSpec("logs", "t,end", "tail", "Follow tail", label="Tail"),
    ActionSpec("logs", "h", "history", "Older records (logger)", show=False),
    ActionSpec("logs", "c", "clear", "Clear buffer", show=False),
    ActionSpec("logs", "escape", "clear_filters", "Clear filters", show=False),
    # call
    ActionSpec("call", "f9,ctrl+s", "send", "Send request", label="Send"),
    ActionSpec("call", "f7", "pick_service", "Pick service", label="Pick"),
    ActionSpec("call", "f8", "resend", "Resend from history", label="Resend"),
    ActionSpec("call", "f6", "clear_reply", "Clear reply", show=False),
    ActionSpec("call", "escape", "leave_input", "Leave inputs (keys work again)", show=False),
)

WRITE_ACTIONS = frozenset(a.action for a in ACTIONS if a.write)


def specs_for(view: str) -> list[ActionSpec]:
    return [a for a in ACTIONS if a.view == view]


def bindings_for(view: str) -> list[BindingType]:
    """Bindings of one view; write actions get a twin that refuses in read-only mode.

    The view's `check_action` shows exactly one of the pair, so the footer marks the key as
    read-only and pressing it explains why nothing happened instead of doing nothing.
    """
    out: list[BindingType] = []
    for spec in specs_for(view):
        out.append(Binding(spec.keys, spec.action, spec.footer, show=spec.show))
        if spec.write:
            out.append(
                Binding(
                    spec.keys,
                    f"refuse('{spec.action}')",
                    f"{spec.footer}(RO)",
                    show=spec.show,
                )
            )
    return out
