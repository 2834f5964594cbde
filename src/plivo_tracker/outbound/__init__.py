"""Outbound flow: sending through the outbox, retry policy, pacing to PLIVO_MPS."""
