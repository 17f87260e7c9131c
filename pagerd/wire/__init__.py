"""What crosses the edges: explaining input that does not fit, for the config file and the API."""
