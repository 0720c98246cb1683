"""Reusable widgets and dialogs of the console."""
