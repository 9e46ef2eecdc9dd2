"""The internal lens: what a generator encodes inside (RAIGen, seed 000) and how it drives the output lens.

* ``codes``: the internal Matryoshka BatchTopK SAE, trained on captured bottleneck
  positions, and the per-image and per-position codes of its coarsest group.
* ``minority``: frequency, distinctiveness and minority score per feature; greedy NMS.
* ``semantic``: the images' semantic embeddings (CLIP or the world encoder) and feature labels.
* ``attribution``: probes from pooled internal codes to output-lens concepts, ranked by
  integrated gradients (DiffLens, seed 002).

The pipeline stage is ``precompute.stages.internal``.
"""
