"""Artifact uses as W&B run inputs: the queue, the journal, who read, the access log."""
