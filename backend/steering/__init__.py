"""Steering over HTTP: scale or add internal SAE features while the generator denoises, and measure the effect.

``service`` (the worker queue, the cache, the time limit), ``atlas`` (a service from an
atlas's internal lens), ``inputs`` (a request and its validation), ``page`` (the
panel), ``sweep`` (a dose-response in the background), ``evaluation`` (``blindspot
eval steer``). The hook itself is ``precompute.generators.steering``.
"""
