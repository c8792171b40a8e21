"""The stand-in's arch `archx` (imported as a top-level package, as FlagGems imports `hopper`)."""
