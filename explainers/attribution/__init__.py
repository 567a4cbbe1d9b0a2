"""Attribution methods: how much each input token pushed the model towards a target.

Gradient: ig, saliency, input_x_gradient, deeplift, gradient_shap. Perturbation and
surrogate: occlusion, lime, kernel_shap, shap. Groups of tokens: segment_shapley.
Importing this package registers them all.
"""

from explainers.attribution import (  # noqa: F401  (importing registers the methods)
    deeplift,
    gradient_shap,
    group_shapley,
    ig,
    input_x_gradient,
    kernel_shap,
    lime,
    occlusion,
    saliency,
    shap_partition,
)
