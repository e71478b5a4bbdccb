"""Tools that measure: the ``bench`` load generator and the fake server it calibrates itself against."""
