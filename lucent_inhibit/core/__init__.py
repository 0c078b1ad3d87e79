"""The mechanisms every method shares, each defined once: input checks and bounds (``validate``), layer
names, hooks and the forward-order probe (``hooks``), features (``features``) and token grids (``tokens``),
the model's preparation and input normalisation (``preparation``), result files (``results``), atomic
files (``io``), the render engine around Lucent's ``render_vis`` (``rendering``), torchrun (``distributed``)
and the matplotlib helpers (``figures``). Importing this package imports nothing else (the command line's
``--help`` reads ``validate`` without torch).
"""
