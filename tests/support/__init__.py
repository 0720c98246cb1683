"""Helpers the tests share: ports, processes, daemon stacks, buses and one polling helper.

Test modules import from here (never from another test module); conftest files keep only
fixtures, each a thin wrapper around what lives here.
"""
