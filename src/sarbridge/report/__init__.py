"""Human-readable results: Markdown tables and plots."""
