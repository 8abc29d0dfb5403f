"""The gateway end of a kit link: a session over any byte link (a serial port, a pty)."""
