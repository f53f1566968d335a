"""The object cache in the SDK's layout, its limits and eviction, pinned versions."""
