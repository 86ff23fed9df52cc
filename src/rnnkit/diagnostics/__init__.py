"""Why recurrent nets fail, on the user's own model: gradient flow through time,
Jacobian-product norms, gate saturation and unit heat maps.

Everything takes an rnnkit layer stack and an input batch (model-agnostic); the plots
write PNGs. See ``docs/vanishing_gradients.md`` for what they show on the long-range
tasks of ``rnnkit.synthetic``.
"""

from rnnkit.diagnostics.gates import (
    GATE_NAMES,
    HIGH,
    LOW,
    GateTrace,
    gate_trace,
    gate_values,
    saturated_fraction,
)
from rnnkit.diagnostics.gradflow import GradientFlow, gradient_flow, jacobian_norms
from rnnkit.diagnostics.plots import (
    plot_curves,
    plot_gate_distributions,
    plot_unit_heatmap,
    unit_heatmap,
)
from rnnkit.diagnostics.unroll import Unrolled, unroll

__all__ = [
    "GATE_NAMES",
    "HIGH",
    "LOW",
    "GateTrace",
    "GradientFlow",
    "Unrolled",
    "gate_trace",
    "gate_values",
    "gradient_flow",
    "jacobian_norms",
    "plot_curves",
    "plot_gate_distributions",
    "plot_unit_heatmap",
    "saturated_fraction",
    "unit_heatmap",
    "unroll",
]
