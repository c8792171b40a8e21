"""model-verify: does a model really serve on the FlagOS multi-chip stack?

The helper package of the notebook `notebooks/verify.ipynb`: one module per step of the data
flow (params → target → probe → model → runs → classify → compare → verdict → report), driven
by `pipeline.Verification`.
"""

__version__ = "0.1.0"
