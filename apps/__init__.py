"""What users run on top of the graph: the ``moa`` command and its subcommands."""
