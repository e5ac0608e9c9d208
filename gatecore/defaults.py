"""The gate settings a user gets by default, in one place: gatecore.GateConfig (the Trainer integration) and the
study runner's SweepConfig (python -m analysis.finetune on a user task) both read them.

They are what the MiniLM protocols chose on val (docs/results.md, "A fair fight on MiniLM"): the authors'
`target` objective (protocols cpu-converged and cpu-fair state it explicitly) and gate lr 0.1, the gate lr
cpu-converged chose on 10 of its 15 seed-0 gate searches and cpu-fair chose where its search is done. A named
protocol states every setting itself, so changing a value here changes no recorded run.
"""

REMOVED = 0.3  # the request: fraction of the gated weights removed
OBJECTIVE = "target"  # params | target | l0 (docs/design.md §1)
GATE_LR = 0.1  # a gate's theta moves from 1 to below -0.55 to close: far more than other weights move
HEAD_LR = 1e-2  # the fresh task head
LAM = 1.0  # weight of the sparsity penalty once warmed up
LAM_WARMUP = 0.2  # fraction of the steps over which lam ramps up from 0
SIGMA, REG_SIGMA = 0.1, 0.5  # the gates' forward-noise scale; the scale inside the regulariser's Phi
CONTROL_RESET = True  # the controller's lam back to 1 once the removal reaches the request (less overshoot)
CONTROL_RECENTER = True  # its integral back to 0 once gates pushed open have reopened to the request (less undershoot)
