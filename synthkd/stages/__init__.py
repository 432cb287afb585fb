"""Stage implementations: each takes its config, the runtime and its input rows, and returns rows."""
