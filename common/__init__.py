"""Shared code: settings, data, models, learning, metrics, wire records."""
