"""vdi: generalisable video moment retrieval with Visual-Dynamic Injection (CVPR 2023).

Import what you need from the submodules (``vdi.config``, ``vdi.model``, ...); this package
import stays light on purpose.
"""

__version__ = "0.1.0"
