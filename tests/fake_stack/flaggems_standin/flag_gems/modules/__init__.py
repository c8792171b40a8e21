from flag_gems.modules.normalization import gems_rms_forward

__all__ = ["gems_rms_forward"]
