"""Plivo wire format: signatures, callback parsing, error codes."""
