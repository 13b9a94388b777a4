"""Shoal's server side: the bridge between HTTP (and the command line) and the lake.

Only this package may import both :mod:`lake` and the web framework; :mod:`sdk` imports neither.
"""
