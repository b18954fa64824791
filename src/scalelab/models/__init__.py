"""Model families. A family turns a target size into a shape and a shape into an nn.Module; see
`models.base.Family`."""

from scalelab.models.base import (
    REGISTRY,
    Family,
    check_fit,
    count_params,
    family_options,
    get_family,
)

__all__ = ["REGISTRY", "Family", "check_fit", "count_params", "family_options", "get_family"]
