"""Human-readable results: Markdown tables, plots, per-query rankings and the HTML report
(:func:`sarbridge.report.html.write_report`, ``sarbridge report RUN_DIR``)."""
