"""Deployment scripts and the loopback harness that drives them (``deploy.loopback``)."""
