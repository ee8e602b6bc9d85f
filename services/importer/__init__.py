"""Importing a Composer v2 repository into the releases topic, and its command."""
