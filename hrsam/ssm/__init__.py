"""Selective-scan backends and the cycle-scan SSM module (HRSAM spec A.9, A.11)."""

from hrsam.ssm.scan import SCANS, default_scan, get_scan, list_scans, register_scan, selective_scan

__all__ = ["SCANS", "default_scan", "get_scan", "list_scans", "register_scan", "selective_scan"]
