"""Conversations: one thread per remote number, inbound and outbound messages together."""
