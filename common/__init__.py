"""The Flower-free learning core: settings, data, models, learning (no wire code)."""
