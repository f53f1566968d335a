"""Registry names -> versions -> manifests, cached with their lifetimes, and the on-disk
last-known copy (metastore)."""
