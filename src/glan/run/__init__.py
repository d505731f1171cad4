"""A run on disk: its directory (lock, compatibility, manifest, publishing) and staged state."""
