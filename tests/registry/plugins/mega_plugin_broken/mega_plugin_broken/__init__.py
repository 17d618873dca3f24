"""Broken plugins, one per module; the test suite checks each is reported and skipped."""
