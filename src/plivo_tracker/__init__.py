"""plivo-tracker: send SMS/MMS through Plivo and track every message's status durably."""

__version__ = "0.1.0"
