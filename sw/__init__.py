"""Software side of apical: data, Brevitas models, training, integer export, golden model.

Importing this package is cheap: torch and brevitas are imported only by the
modules that need them (models, training, export), never by `config`, `ir` or
`golden`, which the hardware side may read.
"""
