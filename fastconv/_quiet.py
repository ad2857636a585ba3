"""inf - inf and the like give NaN silently in every method, as they do in PyTorch: NumPy's floating
point warnings are off inside the kernels' Python parts."""

import numpy as np

quiet = np.errstate(invalid="ignore", over="ignore", divide="ignore")
