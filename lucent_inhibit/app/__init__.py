"""The application over the library: the stage registry (``registry``, ``options``, ``configs``, ``stages``),
the command line (``cli``), output folders (``outputs``), what stages share at run time (``runtime``) and the
report (``report``, ``page``). Nothing below ``app`` imports it. Importing this package imports nothing else.
"""
