"""The asset registry on the gateway: :mod:`.service` (the service), :mod:`.config` (its config section),
:mod:`.inventory` (the school's CSV), :mod:`.energy` (the energy rule)."""

from edugate.gateway.services.assets.config import AssetsConfig, EnergyConfig
from edugate.gateway.services.assets.inventory import Asset, InventoryProblem, read_inventory
from edugate.gateway.services.assets.service import AssetsService, Usage

__all__ = ["Asset", "AssetsConfig", "AssetsService", "EnergyConfig", "InventoryProblem", "Usage", "read_inventory"]
