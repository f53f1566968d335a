"""Pure logic, no I/O: names, manifests, lock files, byte ranges, expiring maps."""
