"""`tao demo`: the whole TAO loop on the embedded model, with its workload, prompt generator and report."""
