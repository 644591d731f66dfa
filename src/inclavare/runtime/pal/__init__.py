"""Enclave runtimes: the PAL API (C ABI v1-v3 and Python plugins) and the in-container runelet.

Modules (each with one job): ``abi`` (the C ABI through ctypes), ``plugin`` (the Python
protocol, the C adapter, discovery), ``sim`` / ``occlum`` / ``gramine`` (built-in runtimes),
``runelet`` (the container's pid 1), ``runelet_rt`` (its read-only runtime folder and the
launch planner rune calls). See docs/enclave-runtimes.md.
"""
