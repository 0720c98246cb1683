"""Textual operator console (`plant tui`).

`source` and `logstore` are Textual-free so they can be tested and reused without a terminal;
everything that imports Textual lives in `app`, `screens/` and `widgets/`.
"""
