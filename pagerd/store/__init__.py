"""Where pagerd keeps its state: the SQLite store, its schema and migrations."""
