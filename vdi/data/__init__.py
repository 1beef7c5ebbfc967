"""The shard data pipeline, one module per side of the format.

* :mod:`vdi.data.format`: what a split folder holds (samples, manifest) and the checks on it;
* :mod:`vdi.data.writer`: :class:`~vdi.data.writer.SplitWriter`, the one writer of that format
  (data_prep, the tests and the benchmarks);
* :mod:`vdi.data.loader`: :class:`~vdi.data.loader.ShardStream`, the streaming training / evaluation loader.

Nothing is imported here, so reading a manifest (``vdi.predict``, ``data_prep verify``) never loads
the loader's torch DataLoader machinery.
"""
