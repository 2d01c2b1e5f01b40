"""Hardware side of apical: Amaranth components of the processing-element array.

Reads the IR (`apical.sw.ir`, numpy only); never imports torch or brevitas.
"""
