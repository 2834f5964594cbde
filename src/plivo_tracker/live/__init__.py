"""The live stream: committed status changes fanned out to WebSocket clients."""
