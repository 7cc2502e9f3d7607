"""The distribution point side: the DP provider, what it is asked, and the on-disk layout
both sides of a transfer use."""

from actors.dp._layout import (
    CONTENT_LIBRARY,
    STAGING_SHARE,
    content_library,
    discard_staged,
    dp_root,
    staged_package,
    staging_folder,
    staging_name,
)
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
)

__all__ = [
    "CONTENT_LIBRARY",
    "STAGING_SHARE",
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
    "content_library",
    "discard_staged",
    "dp_root",
    "staged_package",
    "staging_folder",
    "staging_name",
]
