"""``moa batch``: the command; the dataset runner it drives is ``langgraph_moa.core.batch``."""
