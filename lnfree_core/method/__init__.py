"""The LayerNorm-removal method (Baroni et al. 2025, section 3 and appendix B), in one package.

    fakeln, fakermsnorm   the FakeLN / FakeRMSNorm blocks (eq. 2): a norm whose per-token sigma can
                          be frozen to a scalar sigma_bar
    norm_kinds            LayerNorm vs RMSNorm: which Fake* block and per-token statistic a family uses
    adapters/             one adapter per model family: where the norms are, how a model is rewired
                          into FakeLN blocks (and back into a stock model at export)
    surgery               replace every norm of a model by its Fake* block (through the adapter)
    tracking              sigma_avg: one update per optimizer step over micro-batches and ranks (EMA)
    aux_loss              the auxiliary loss at the final norm (eq. 3)
    schedule, presets     when each block is removed (removal events, hyper-parameters) and the
                          paper's recipes
"""
