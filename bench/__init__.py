"""The Turret benchmark: `make bench` (or `python -m bench`) measures Turret side by side with a
direct call, nginx and a minimal aiohttp proxy, prints a table, and writes bench/RESULTS.md and a
plot of the latency distributions. See bench/RESULTS.md for the method.
"""
