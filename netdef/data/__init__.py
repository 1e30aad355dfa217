"""Caffe's data files: Datum records, LMDB databases, and the tools that make them.

Each module has one job, and importing this package imports none of them, so a caller
pays for OpenCV or LMDB only when it uses them:

* :mod:`netdef.data.datum` — Datum ⇄ numpy arrays and images (Caffe's ``util/io.cpp``).
* :mod:`netdef.data.lmdb_io` — read-only LMDB access in key order with constant memory.
* :mod:`netdef.data.convert_imageset` — Caffe's ``convert_imageset`` tool.
* :mod:`netdef.data.image_mean` — Caffe's ``compute_image_mean`` tool.
* :mod:`netdef.data.commands` — the ``netdef convert-imageset`` and ``compute-image-mean`` verbs.
* :mod:`netdef.data.pipeline` — the data layers' input pipelines, reading these files.
"""
