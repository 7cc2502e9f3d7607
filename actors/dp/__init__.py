"""The distribution point side: the DP provider and what it is asked."""

from actors.dp._provider import (
    DPAbandon,
    DPAddContent,
    DPAddFile,
    DPApplyDelta,
    DPDamaged,
    DPDamageReport,
    DPInventory,
    DPProvider,
    DPQuery,
    DPRemovePackage,
    DPSignature,
    DPValidate,
    DPValidation,
    staging_name,
)

__all__ = [
    "DPAbandon",
    "DPAddContent",
    "DPAddFile",
    "DPApplyDelta",
    "DPDamageReport",
    "DPDamaged",
    "DPInventory",
    "DPProvider",
    "DPQuery",
    "DPRemovePackage",
    "DPSignature",
    "DPValidate",
    "DPValidation",
    "staging_name",
]
