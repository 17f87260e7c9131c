"""The actor runtime: one owner per service, its mailbox and its timers, and the catalogue.

Imports the core only; adapters reach it through its one entry point (``Runtime.ask``).
"""
