"""How a worker's process is held: `pty` (a child of the server) or `tmux` (survives restarts)."""
