"""Curation: one annotation per post, splits, export files, dataset cards and label quality."""
