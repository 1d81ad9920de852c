"""The jupyter_server extension: REST and WebSocket API over the engine, under /api/mas."""
