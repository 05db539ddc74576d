"""Helpers for redoubt's system tests: processes, certificates, TLS/RESP clients, memory scans.

Everything here is bounded: every wait has a deadline and every subprocess a timeout.
"""
