"""The ``assets:`` section of central.yaml: how the registry judges status and what the schools declare."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.contract.ids import ID_PATTERN


class AssetsSection(BaseModel):
    """Central's asset registry (``edugate assets``, the Equipment page): docs/assets.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    declared: dict[str, int] = Field(default_factory=dict, description="School id -> how many items of equipment "
                                     "the school's books list: the denominator of the share on digital records "
                                     "(a school not listed has no share).")
    in_use_days: int = Field(7, ge=1, le=366, description="An asset used on one of the last this many days is "
                             "'in use'.")
    missing_after_days: int = Field(14, ge=1, le=366, description="A device or tagged item not seen for this many "
                                    "days is 'missing'.")

    @field_validator("declared")
    @classmethod
    def _declared(cls, value: dict[str, int]) -> dict[str, int]:
        import re

        for school, count in value.items():
            if not re.fullmatch(ID_PATTERN, school):
                raise ValueError(f"{school!r} is not a school id (lower-case letters, digits, _ and -)")
            if count < 0:
                raise ValueError(f"{school}: a declared count cannot be negative ({count})")
        return value
