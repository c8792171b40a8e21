"""The stand-in plugin's own ops (like vllm_fl/ops/): OOT CustomOps calling FlagGems directly."""
