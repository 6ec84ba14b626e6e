"""The search domain, torch-free: the native engine's space, settings, results and run log, behind typed objects."""
