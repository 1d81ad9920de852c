"""The mas_jupyter engine: sessions, workspaces, workers and their state. No Jupyter imports."""
