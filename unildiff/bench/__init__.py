"""Benchmarking: ``unildiff bench`` and the ``bench`` stage time every backend (:mod:`unildiff.bench.run`),
each in its own process by default (:mod:`unildiff.bench.isolated`), with the timing primitives of
:mod:`unildiff.bench.timing` and the settings of :mod:`unildiff.bench.config`."""
