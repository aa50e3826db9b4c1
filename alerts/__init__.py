"""Telling people: alert state machine, alert events and publisher, Prometheus metrics."""
