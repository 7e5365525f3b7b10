"""fmm-harmonize: image harmonization with attention-based feature modulation (FMM, BMVC 2020)."""
__version__ = "0.1.0"
