"""The Plivo simulator: the only fake, speaking Plivo's wire protocol (in-process or standalone).

`api` is the Message API with its faults, rate limits and `/_simulator/` control routes,
`scenario` decides (purely, seeded) what happens to each message, and `emitter` carries that out:
it moves the MDRs and posts genuinely signed status callbacks.
"""
