"""Tools around the apps: the experiment runner, the in-process Grid, the comm report."""
