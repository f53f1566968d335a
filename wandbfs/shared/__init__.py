"""The shared cache tier a cluster's hosts read from before W&B: its stores, leases and parts."""
