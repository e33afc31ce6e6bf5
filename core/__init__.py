"""What the applications share, below them: running a turn as events (turns.py), settings from
flags and the checks before any call (settings.py), the command-line plumbing every command
uses (command.py), and the dataset runner behind ``moa batch`` and ``moa compare`` (batch/).

Applications (``langgraph_moa.apps.*``) import this package and never each other.
"""
