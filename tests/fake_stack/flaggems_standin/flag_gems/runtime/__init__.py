"""Runtime of the flag_gems stand-in: a fixed CPU "device" (the real one detects a GPU vendor)."""
