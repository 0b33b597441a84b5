"""Owners: which process holds each socket (/proc/PID/fd), and who lives in a network namespace.

Kept free of imports on purpose: the scan workers (worker.py) import only read.py and cache.py
and must stay small.
"""
