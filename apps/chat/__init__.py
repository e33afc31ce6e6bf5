"""The ``moa`` command: an entry point at the edge; it imports the graph, never the reverse."""
