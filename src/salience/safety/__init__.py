"""The safety layer: crisis detection on every user message, pinned safety memory,
crisis resources for the tenant's locale, and escalation to the app's safety team."""
