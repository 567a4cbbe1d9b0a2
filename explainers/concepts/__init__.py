"""Global explanations in the model's own representation: concepts, steering and geometry.

Three questions the probes (`explainers.probing`) leave open, asked of a layer's residual
stream through the one anatomy of the model (`workbench.anatomy`):

- `directions`: concept vectors (a linear probe's direction, the difference of class
  means, CAA's contrastive mean difference, ActAdd's prompt-pair difference) and random
  directions of equal norm, the control every result here is compared with;
- `tcav`: does the decision move along a concept? (Kim et al. 2018, the directional
  derivative of a choice objective, and the fraction of decisions where it is positive);
- `steering`: can the decision be pushed along it? (the choice distribution as alpha
  times the direction is added to the residual stream);
- `rsa`: which layers' geometry mirrors the world? (representational similarity between
  the residual stream and the game state, with a permutation test).

`steering.add_direction` is the one place a direction is written into the model; TCAV's
derivative is taken at the same point, so the two agree by construction: TCAV's
sensitivity is the slope of steering's dose-response at alpha = 0.

`method` registers `tcav` with the explain registry (category probing): one decision's
concept sensitivity, token by token, for `workbench explain --method tcav`.
"""

from explainers.concepts import method  # noqa: F401  (registers tcav)
