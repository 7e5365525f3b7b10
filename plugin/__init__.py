"""The GIMP side: the Harmonize Layer plug-in, its gimpfu-compatible shim and the engine client.

Standard library only; `harmonize gimp install` copies these files into GIMP's plug-in folder.
"""
