"""Processes that keep Stepdown's promises in the background (schedulers, dispatchers): their
heartbeats, the scheduler leader's lease, readiness, and the dead-man's switch."""
