"""Board constraint files (XDC, PCF, LPF), shipped as package data of ``apical.constraints``."""
