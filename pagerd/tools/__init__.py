"""Tools beside the daemon, for trying pagerd out; nothing here runs inside ``pagerd run``."""
