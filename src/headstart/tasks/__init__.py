"""Task models: a backbone plus the head of one task."""
