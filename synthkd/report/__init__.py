"""Run report: RUN_DIR/run.json -> RUN_DIR/report/{index.html, report.md, *.png}.

`write_report` is the public entry point. The HTML page is self-contained (inline CSS, no external
URLs); the markdown twin has the same tables; plots are PNGs beside both, referenced by relative
path. Every run.json key but "stages" is optional.

Modules: `tables` (run.json read defensively into rows of text), `plots` (matplotlib PNGs per stage
type; new stage types add plotters to `plots._TYPE_PLOTS`), `render` (the blocks of the page, as
HTML and as markdown).
"""

from synthkd.report.render import write_report

__all__ = ["write_report"]
