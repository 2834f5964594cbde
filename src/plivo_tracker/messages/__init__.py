"""Messages: the core aggregate (message, parts, event history) and its rules."""
