"""A provider simulator: Cielo, Rede and Getnet look-alikes over real HTTP, with faults on demand.

Standalone on purpose (no Django): `python -m providers.simulator` or `start_simulator(port=0)`.
"""

from providers.simulator.server import Simulator, start_simulator, stop_simulator

__all__ = ["Simulator", "start_simulator", "stop_simulator"]
