"""Reports written from finished runs (comparison tables, plots)."""
from .compare_report import (
    build_comparison,
    delong_from_runs,
    discover_arms,
    markdown_table,
    run_compare,
    write_report,
)

__all__ = ["build_comparison", "delong_from_runs", "discover_arms", "markdown_table", "run_compare", "write_report"]
