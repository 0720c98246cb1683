"""``plant web``: the console served to browsers (textual-serve), its page templates and the
token login in front of it. Nothing here imports Textual: each browser session runs its own
``plant tui`` process."""
