"""The model M = {E, C, B}: encoders, connector, backbone, adapters, and their state."""
