"""The blindspots paper's analyses (seed 001, sections 3-4, appendices D, H, K) on sparse energies.

Every function takes per-image energy matrices as ``scipy.sparse`` CSR arrays of shape
(n_items, n_concepts), rows aligned by item (row i of the real matrix and row i of a
generator's matrix are the pair (x_i, x'_i)). Nothing loops over concepts in Python.
"""
