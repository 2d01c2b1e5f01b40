"""Simulation of the generated RTL: cocotb testbenches and their runner (Icarus, Verilator)."""
