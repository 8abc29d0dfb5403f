"""Microcontroller lab kits (micro:bit, ESP32, Arduino) on the EduGate kit link (docs/firmware-bridge.md)."""
