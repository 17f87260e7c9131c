"""The pure core: escalation decisions, the records the store keeps, and the ports.

Nothing here does I/O, reads a clock or imports anything of pagerd outside ``core``.
"""
