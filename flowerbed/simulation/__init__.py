"""Simulation services: the virtual grid, transports, participation, faults, the ledger.

Above clients and strategies; strategies never import it (they see a Flower Grid).
"""
