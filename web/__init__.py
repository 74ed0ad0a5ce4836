"""The aiohttp app: dashboard pages, JSON API, WebSocket hub, softphone assets."""
