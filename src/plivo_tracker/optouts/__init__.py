"""Opt-outs: STOP/START/HELP keywords, the opt-out list and its history, the send refusal."""
