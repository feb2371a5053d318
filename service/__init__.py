"""The gallery-search service."""
