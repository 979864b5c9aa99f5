"""Node kinds: one module per kind of build node (normalize, data, reference, pass, compile,
verify), each implementing `base.NodeKind`; `registry.KINDS` maps node definitions to them."""
