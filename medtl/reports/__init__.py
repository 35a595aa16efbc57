"""Pages written from results: rendering only (Jinja2 templates, one stylesheet, self-contained
HTML plus Markdown).  Finding runs is :mod:`medtl.runs`; statistics are :mod:`medtl.stats`."""
from .compare import markdown_table, write_compare
from .robustness import write_robustness

__all__ = ["markdown_table", "write_compare", "write_robustness"]
