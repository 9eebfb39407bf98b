"""Pictures and tables of results shared by the tasks: ranked-list figures, 2-D projections, Markdown tables."""
