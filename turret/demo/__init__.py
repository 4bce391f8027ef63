"""`make run`: Turret on its demo configuration, in front of a bundled demo upstream."""
