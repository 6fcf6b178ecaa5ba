"""Reusable widgets of the studio window (no engine calls, no threads)."""
