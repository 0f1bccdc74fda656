"""The Interpretable Embedding Procedure (IEP) knowledge transfer itself (Lee & Song, AAAI 2021).

`spca` (stacked PCA with its IPCA state), `points` (the sensing points compressed for teacher and
student), `mpnn` (the message-passing network), `black_box` (the multi-head attention module, also MHGD's),
`losses`, `adapters` (heterogeneous students), `clipped` (the author's norm-clipped multi-task gradient,
also KD-SVD's and MHGD's) and `distiller` (`IEPDistiller`, phase 1 and phase 2). Beside it, `iep/` holds
the engine, the baselines, the interpretability views and the commands.
"""
