"""The W&B client: every SDK call (and the only user of SDK internals), the gate that
bounds them, the SDK's environment."""
