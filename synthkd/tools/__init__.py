"""Tools a teacher may call while it works a task: declared in a pipeline, run by synthkd, results fed back."""
