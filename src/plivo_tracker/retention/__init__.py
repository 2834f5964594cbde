"""Retention: what the purge deletes and when; message text kept only while sending needs it."""
