"""The `clientela` command line: ops tasks and data tools (`uv run clientela --help`)."""
