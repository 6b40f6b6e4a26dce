"""What every stage shares: the subnet spec, the configuration, user-facing errors, file helpers."""
