"""The HTTP edge: one process serving Label Studio's ML backend API while it runs."""
