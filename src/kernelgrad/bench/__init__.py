"""``kernelgrad bench``: the forum's experiment side by side with kernelgrad, and a sweep over n.

* :mod:`~kernelgrad.bench.forum`: the forum's JAX code as posted (bug kept) and corrected.
* :mod:`~kernelgrad.bench.peers`: the competing implementations and the float64 reference.
* :mod:`~kernelgrad.bench.runner`: timing, accuracy, memory and skipping.
* :mod:`~kernelgrad.bench.firstcall`: first calls in a fresh process.
* :mod:`~kernelgrad.bench.report`: the terminal table, the JSON file and the plot.
"""
