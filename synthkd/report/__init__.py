"""Run report: RUN_DIR/run.json -> RUN_DIR/report/{index.html, report.md, *.png}.

`write_report` is the public entry point. The HTML page is self-contained (inline CSS, no external
URLs); the markdown twin has the same tables; plots are PNGs beside both, referenced by relative
path. Every run.json key but "stages" is optional.

Modules: `readers` (run.json read into typed models: each stage's entry with its stage type's stats
model, tolerant of missing, null or odd values), `tables` (those models into rows of text; each stage
type's stats model names its result blocks), `plots` (matplotlib PNGs, each drawn where a stage
recorded its data), `render` (the blocks of the page, as HTML and as markdown).
"""

from synthkd.report.render import write_report

__all__ = ["write_report"]
