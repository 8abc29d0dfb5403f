"""BLE lab probes (BTHome v2, encrypted or not, and ATC/PVVX thermometers) on one shared scanner per adapter."""
