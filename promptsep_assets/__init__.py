"""The default model bundle and bundled examples (found by pip and editable installs)."""
