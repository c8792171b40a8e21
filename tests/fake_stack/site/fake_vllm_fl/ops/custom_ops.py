"""register_oot_ops(): like vllm_fl.ops.custom_ops, once per process."""

from vllm.model_executor.custom_op import CustomOp, op_registry_oot


def register_oot_ops() -> bool:
    """Register RMSNormFL as the OOT RMSNorm; False when this process already did."""
    if "RMSNorm" in op_registry_oot:
        return False
    from fake_vllm_fl.ops.layernorm import RMSNormFL

    CustomOp.register_oot(_decorated_op_cls=RMSNormFL, name="RMSNorm")
    return True
