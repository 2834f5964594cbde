"""The Plivo simulator: the only fake, speaking Plivo's wire protocol (in-process or standalone)."""
