"""Inbound flow: verified status callbacks, group commit, spool."""
